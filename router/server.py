"""`python -m router.server --bind HOST:PORT --mode embedded|fly`: the router (router/proxy.py) under uvicorn.

Django is set up for the ORM only (the routing table and, embedded, the wake): the router serves no Django URL.
"""

from __future__ import annotations

import argparse
import logging
import os


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:8080", help="HOST:PORT")
    parser.add_argument("--mode", choices=("embedded", "fly"), default="embedded")
    arguments = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudctl.settings")
    import django

    django.setup()
    # httpx logs every request at INFO: one line per proxied request (paths and queries) would be the router's
    # main cost and an access log nobody asked for.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import uvicorn

    from .proxy import Router

    host, _, port = arguments.bind.rpartition(":")
    uvicorn.run(Router(mode=arguments.mode), host=host.strip("[]") or "127.0.0.1", port=int(port),
                loop="uvloop", http="httptools", lifespan="on", access_log=False, server_header=False,
                date_header=False, log_level="warning", timeout_keep_alive=30,
                # No X-Forwarded-* is believed from anyone: the router is the edge (embedded) or behind Fly's proxy,
                # and decides on the Host alone.
                proxy_headers=False)


if __name__ == "__main__":
    main()
