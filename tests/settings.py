"""Settings for the test suite: the production settings module, with an isolated environment.

Nothing from the developer's shell or embedded state may leak in: a throwaway state dir, no AWS
variables (the fixtures point boto3 at the local SeaweedFS or at moto), fixed token keys.
"""

import os
import tempfile

os.environ["CLOUDCTL_STATE_DIR"] = tempfile.mkdtemp(prefix="cloudctl-test-state-")
for name in list(os.environ):
    if name.startswith("AWS_") or name in ("DATABASE_URL", "CLOUDCTL_URLCONF"):
        del os.environ[name]
os.environ.update({
    # Never fall through to a real profile or the EC2 metadata service.
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    "CLOUDCTL_TOKEN_KEYS": "test-signing-key-old,test-signing-key-current",
})
# `make test` runs the suite twice: on SQLite (the default) and on a throwaway PostgreSQL cluster (tests/postgres.py).
TEST_DATABASE = os.environ.get("CLOUDCTL_TEST_DATABASE", "sqlite")
if TEST_DATABASE == "postgres":
    from tests.postgres import cluster_url

    os.environ["DATABASE_URL"] = cluster_url()
elif TEST_DATABASE != "sqlite":
    raise RuntimeError(f"CLOUDCTL_TEST_DATABASE is sqlite or postgres, not {TEST_DATABASE!r}")

from cloudctl.settings import *  # noqa: E402,F403

# Read once, above; the test's subprocesses are handed the test database explicitly (tests/database.py).
os.environ.pop("DATABASE_URL", None)

ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

# Production's hasher costs 0.6 s of CPU here for every password set or checked (PBKDF2, 1,000,000 rounds), and the
# suite sets and checks thousands (lockouts alone try hundreds): what the tests need is the check, not its cost, as
# Django's testing docs advise. PBKDF2 stays second, for a password a process on production's settings must check
# (tests/test_claims_concurrency.py's web processes).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher",
                    "django.contrib.auth.hashers.PBKDF2PasswordHasher"]

# The suite exercises every page and the private API through one client, as the embedded stack serves them.
ROOT_URLCONF = "cloudctl.urls"

# whitenoise warns about a missing static dir; production fills it with collectstatic.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

if TEST_DATABASE == "sqlite":
    # A file, not memory: end-to-end tests run real subprocesses (worker, provisioning) against the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(STATE_DIR / "test.sqlite3")}
