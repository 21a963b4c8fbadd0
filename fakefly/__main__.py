"""`python -m fakefly --port 4280`: a fake Fly Machines API on 127.0.0.1 until interrupted."""

from __future__ import annotations

import argparse
import threading

from .app import FakeFly, Latencies
from .server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fakefly", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--org", action="append", dest="orgs", metavar="SLUG",
                        help="an organization the token belongs to (repeatable; default: personal)")
    parser.add_argument("--foreign-app", action="append", default=[], metavar="NAME",
                        help="an app name taken by someone else's org (repeatable)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply every simulated latency (0.01 makes a 2 s update take 20 ms)")
    parser.add_argument("--request-latency", type=float, default=0.0,
                        help="seconds added to every answer, as the round trip to Fly would")
    parser.add_argument("--autostop-idle", type=float, default=Latencies.autostop_idle, metavar="SECONDS",
                        help="seconds without a request before Fly's proxy stops a Machine that has autostop "
                             f"(default {Latencies.autostop_idle:.0f}; 0: never)")
    parser.add_argument("--unhealthy-image", action="append", default=[], metavar="IMAGE",
                        help="Machines running this image fail their health checks (repeatable)")
    parser.add_argument("--no-response-check", action="store_true",
                        help="do not validate the fake's own answers against the spec (requests still are)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-rate-limits", action="store_true", help="never answer 429")
    args = parser.parse_args(argv)

    fake = FakeFly(orgs=tuple(args.orgs or ["personal"]), foreign_apps=tuple(args.foreign_app), seed=args.seed,
                   time_scale=args.time_scale, rate_limits=not args.no_rate_limits,
                   latencies=Latencies(request=args.request_latency, autostop_idle=args.autostop_idle or None), unhealthy_images=tuple(args.unhealthy_image),
                   check_responses=not args.no_response_check)
    url, stop = serve(fake, port=args.port)
    print(f"fakefly: Fly Machines API at {url} (any Bearer token)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
