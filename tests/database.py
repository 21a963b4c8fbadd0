"""The test database as a subprocess (a worker, a server, a command) must be told it: SQLite's file or PostgreSQL's
test database, whichever this session runs on."""

from urllib.parse import quote

from django.db import connection


def database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    credentials = f"{quote(settings['USER'], safe='')}:{quote(settings['PASSWORD'], safe='')}"
    return f"postgres://{credentials}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
