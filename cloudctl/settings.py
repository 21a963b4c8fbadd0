"""cloudctl settings, read from the environment (12-factor).

Every value has a default that is safe for the embedded run on one machine (SQLite, local S3/STS, secrets
generated once into the state directory). Production sets the environment: see README "Configuration".
"""

import secrets
from pathlib import Path

import environ

from cloudctl.private_files import private_directory, private_file, read_or_create_secret

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

# Where the embedded run keeps its database, generated secrets and local S3 data.
STATE_DIR = Path(env.str("CLOUDCTL_STATE_DIR", default=str(BASE_DIR / "var")))

# `manage.py dev` writes the local S3/STS endpoint and keys here so that every other command run on
# this machine reaches the same server. Variables already set in the environment always win.
EMBEDDED_ENV_FILE = STATE_DIR / "embedded.env"
if EMBEDDED_ENV_FILE.exists():
    environ.Env.read_env(EMBEDDED_ENV_FILE)


# What every machine of one deployment must share, set explicitly in the environment: unset (or empty), each falls
# back to a value of the machine's own (a secret generated into its state dir, a SQLite file there), and the
# machines of a fleet would disagree (sessions, team tokens, routing secrets, metrics scrapes, the database).
# `manage.py check --deploy` fails without any of them (cloudctl/checks.py, cloudctl.E006).
FLEET_SHARED_SETTINGS = ("DATABASE_URL", "DJANGO_SECRET_KEY", "CLOUDCTL_TOKEN_KEYS", "CLOUDCTL_ROUTER_KEY",
                         "CLOUDCTL_METRICS_TOKEN")


def _generated_secret(name: str) -> str:
    """A random secret created on first use and kept in the state dir (embedded mode only), 0600 in 0700."""
    private_directory(STATE_DIR)
    return read_or_create_secret(STATE_DIR / "secrets" / name, lambda: secrets.token_urlsafe(50))


DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or _generated_secret("django-secret-key")
# Older keys, still accepted after a rotation (signatures, and the encrypted TOTP secrets: cloudctl.accounts).
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "cloudctl",  # before allauth: its templates (cloudctl/templates/) restyle allauth's pages
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "django_tasks",
    "django_tasks_db",
    "teams",
    "instances",
    "backups",
    "deploys",
    "credentials",
    "domains",
    "sso",
    "members",
    "console",
    "router",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "cloudctl.accounts.StaffTwoFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# What a process serves: only the operator pages (cloudctl.urls_public, the default, so that a process started
# without thinking never exposes the private API or the metrics on its address), only the private API and the
# metrics (cloudctl.urls_private, for the process on the private network address) or both (cloudctl.urls: the
# embedded stack on 127.0.0.1 opts into it).
ROOT_URLCONF = env.str("CLOUDCTL_URLCONF", default="cloudctl.urls_public")
if ROOT_URLCONF == "cloudctl.urls_private":
    # Programs call the private API: no sessions, users, messages or static files to serve.
    MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "django.middleware.common.CommonMiddleware"]
    # Nor sign-in: allauth refuses to load without its middleware, so it is left out with it.
    INSTALLED_APPS = [app for app in INSTALLED_APPS if not app.startswith("allauth")]
    # The admin's middleware checks: this process never serves the admin.
    SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]
WSGI_APPLICATION = "cloudctl.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{STATE_DIR / 'cloudctl.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several server processes and the task worker write at once: WAL lets readers proceed, IMMEDIATE
    # takes the write lock up front (no upgrade deadlocks) and the timeout waits for it instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # SQLite gives the -wal and -shm files the database's own mode.
    private_directory(STATE_DIR)
    if DATABASES["default"]["NAME"] != ":memory:":
        private_file(Path(DATABASES["default"]["NAME"]))
# Reopening the connection on every request costs more than a credential exchange's own queries.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The login rate limits and spent TOTP codes live in the cache, so it must be one that every gunicorn worker
# shares: the database (its table is made by the `cloudctl` app's migration). Nothing else uses the cache.
# Culling could drop a lockout early, hence the generous ceiling.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "cloudctl_cache",
        "OPTIONS": {"MAX_ENTRIES": 1_000_000},
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = STATE_DIR / "static"

# --- HTTPS and cookies ------------------------------------------------------------------------------
# Off for the embedded run on http://localhost; production sets CLOUDCTL_HTTPS=true.
HTTPS = env.bool("CLOUDCTL_HTTPS", default=False)
SECURE_SSL_REDIRECT = HTTPS
# Team instances call the private API over the private network (plain HTTP inside WireGuard).
SECURE_REDIRECT_EXEMPT = [r"^private/"]
SECURE_HSTS_SECONDS = env.int("CLOUDCTL_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
# Host-only cookies: never sent to a team's host (docs/sso.md; `check --deploy` errors on a domain, sso/checks.py).
# Over HTTPS, the __Host- prefix also makes browsers refuse such a cookie set by any other host (a team's host
# writing one for a shared parent domain) and insist on Secure and Path=/.
SESSION_COOKIE_DOMAIN = None
CSRF_COOKIE_DOMAIN = None
SESSION_COOKIE_NAME = "__Host-sessionid" if HTTPS else "sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken" if HTTPS else "csrftoken"
SESSION_COOKIE_PATH = CSRF_COOKIE_PATH = "/"
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("CLOUDCTL_SESSION_SECONDS", default=8 * 3600)
# Server-side sessions (revocable: logout deletes the row) whose table holds only a digest of each key.
SESSION_ENGINE = "cloudctl.sessions"
X_FRAME_OPTIONS = "DENY"
# A refused CSRF check is JSON on the members' JSON endpoints, Django's page elsewhere.
CSRF_FAILURE_VIEW = "cloudctl.errors.csrf_failure"
SECURE_CONTENT_TYPE_NOSNIFF = True
if env.bool("CLOUDCTL_BEHIND_TLS_PROXY", default=HTTPS):
    # Fly's edge terminates TLS and forwards plain HTTP with this header.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Team tokens and credentials ---------------------------------------------------------------------
# Signing keys, oldest first: the last one signs, all of them verify (rotation without downtime).
TOKEN_KEYS = env.list("CLOUDCTL_TOKEN_KEYS", default=[]) or [_generated_secret("token-key")]
BACKUP_BUCKET = env.str("CLOUDCTL_BACKUP_BUCKET", default="backups")
BACKUP_ROLE_ARN = env.str("CLOUDCTL_BACKUP_ROLE_ARN", default="")
CREDENTIALS_TTL = env.int("CLOUDCTL_CREDENTIALS_TTL", default=43200)
# SourceIdentity and session tags make each team visible in CloudTrail; on AWS the role's trust policy
# must then allow sts:SetSourceIdentity and sts:TagSession.
STS_TRACE = env.bool("CLOUDCTL_STS_TRACE", default=True)
STS_TIMEOUT_SECONDS = env.float("CLOUDCTL_STS_TIMEOUT", default=5.0)
STS_RETRY_AFTER_SECONDS = env.int("CLOUDCTL_STS_RETRY_AFTER", default=10)

# Private API limits, "<count>/<seconds>". Per team: credentials issued to it (no refusal counts, so nobody
# can use up a team's allowance). Per address: only bad tokens, so a whole fleet restarting behind one address
# with good tokens is never throttled.
TEAM_RATE_LIMIT = env.str("CLOUDCTL_TEAM_RATE_LIMIT", default="30/3600")
BAD_TOKEN_RATE_LIMIT = env.str("CLOUDCTL_BAD_TOKEN_RATE_LIMIT", default="20/300")
PRIVATE_API_MAX_BODY = env.int("CLOUDCTL_PRIVATE_API_MAX_BODY", default=4096)
# The header carrying the real client address when a proxy sits in front ("Fly-Client-IP" on Fly's edge),
# believed only from the proxies' addresses (comma-separated CIDRs): from anyone else it is ignored.
CLIENT_IP_HEADER = env.str("CLOUDCTL_CLIENT_IP_HEADER", default="")
TRUSTED_PROXIES = env.list("CLOUDCTL_TRUSTED_PROXIES", default=[])
# The private API's audit trail keeps this many days (`manage.py prune_audit`, the `prune_audit_trail` task);
# the metrics' counters keep counting what was pruned.
AUDIT_RETENTION_DAYS = env.int("CLOUDCTL_AUDIT_RETENTION_DAYS", default=90)

# --- How `python -m cloudctl.server` (the private API's server) treats slow and greedy clients ------------
# Seconds a client has to send a request's headers, from the connection's start or the end of the previous
# answer (idle keep-alive connections are closed after 5 s), then to send its body; 408 and closed after that.
SERVER_HEADER_TIMEOUT = env.float("CLOUDCTL_SERVER_HEADER_TIMEOUT", default=10.0)
SERVER_BODY_TIMEOUT = env.float("CLOUDCTL_SERVER_BODY_TIMEOUT", default=10.0)
# Connections one address may hold open at once, per worker process (0: no cap); more are answered 429 and
# closed. Keyed on the connecting address: behind a proxy, cap at the proxy instead.
SERVER_CONNECTIONS_PER_SOURCE = env.int("CLOUDCTL_SERVER_CONNECTIONS_PER_SOURCE", default=32)
# Bodies are read whole before Django sees the request: larger ones are refused with 413 unread.
SERVER_MAX_BODY = env.int("CLOUDCTL_SERVER_MAX_BODY", default=65536)
# Threads per worker process that run Django on complete requests.
SERVER_THREADS = env.int("CLOUDCTL_SERVER_THREADS", default=8)

# --- Background work ---------------------------------------------------------------------------------
# Django's Tasks API (the django-tasks backport on 5.2) with a database-backed queue: `manage.py db_worker`.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
# A task still running after this long is taken to be left by a worker on another machine that died, and is queued
# again (instances/task_claims.py; one whose worker died on the same machine is queued again at once).
TASK_CLAIM_TIMEOUT = env.int("CLOUDCTL_TASK_CLAIM_SECONDS", default=6 * 3600)
# The periodic tasks' intervals in seconds (cloudctl/schedule.py; `manage.py schedule_periodic` queues each
# once, each run queues the next); 0 turns one off. Reconcile's fleet pass compares every backend with the
# database: off by default (fly.toml turns it on), since `manage.py dev` runs the same reconciler for its local
# instances every few seconds.
RECONCILE_EVERY = env.int("CLOUDCTL_RECONCILE_EVERY", default=0)
BACKUP_CHECK_EVERY = env.int("CLOUDCTL_BACKUP_CHECK_EVERY", default=60)
AUDIT_PRUNE_EVERY = env.int("CLOUDCTL_AUDIT_PRUNE_EVERY", default=3600)
# Restore drills (backups/drills.py): the periodic run, how often each team is drilled at least, how many drills
# and seconds one run may spend (so drills never starve other work), and one drill's timeout.
DRILL_EVERY = env.int("CLOUDCTL_DRILL_EVERY", default=600)
DRILL_PERIOD = env.int("CLOUDCTL_DRILL_PERIOD", default=7 * 24 * 3600)
DRILL_BUDGET_DRILLS = env.int("CLOUDCTL_DRILL_BUDGET_DRILLS", default=10)
DRILL_BUDGET_SECONDS = env.int("CLOUDCTL_DRILL_BUDGET_SECONDS", default=120)
DRILL_TIMEOUT = env.int("CLOUDCTL_DRILL_TIMEOUT", default=300)
# Point-in-time restores (backups/restore.py): how long the volume a swap replaced (or, after a swap back, the
# restored one) is kept before it is deleted, and how often restores are tended (a step a crash interrupted is
# resumed, what outlived its keep period is deleted).
RESTORE_KEEP_DAYS = env.int("CLOUDCTL_RESTORE_KEEP_DAYS", default=7)
RESTORE_TEND_EVERY = env.int("CLOUDCTL_RESTORE_TEND_EVERY", default=300)
# The teams' wildcard certificate asked of Fly again (domains/), so the dashboard's status (expiry, validation
# errors) is at most this old: off unless the instances run on Fly (fly.toml turns it on; nothing to certify locally).
CERTIFICATE_CHECK_EVERY = env.int("CLOUDCTL_CERTIFICATE_CHECK_EVERY", default=0)

# --- Team instances -----------------------------------------------------------------------------------
# Where team instances run, as a dotted path (like EMAIL_BACKEND): the local backend runs each one as
# processes on this machine.
MACHINE_BACKEND = env.str("CLOUDCTL_MACHINE_BACKEND", default="instances.backends.local.LocalBackend")
# The image (Fly) or instance version (local) new instances run.
INSTANCE_IMAGE = env.str("CLOUDCTL_INSTANCE_IMAGE", default="local")
# A deploy (command, dashboard, redeploy) accepts only an image starting with one of these, e.g.
# `registry.fly.io/cloudctl-team:`; each ends with ':', '@' or '/' (deploys/checks.py). Unset: on Fly, the team
# image's repository in Fly's registry (`check --deploy` asks for it explicitly); on the local backend, any.
ALLOWED_IMAGE_PREFIXES = env.list("CLOUDCTL_ALLOWED_IMAGE_PREFIXES", default=[])
# How instances reach the private API.
PRIVATE_API_URL = env.str("CLOUDCTL_PRIVATE_API_URL", default="http://127.0.0.1:8000")
# Where browsers reach the control plane (sign-in, my teams, the single sign-on's authorize endpoint): its own
# host, never one under CLOUDCTL_TEAMS_DOMAIN (its cookies are host-only there; see docs/sso.md).
PUBLIC_URL = env.str("CLOUDCTL_PUBLIC_URL", default="http://localhost:8000").rstrip("/")
# Who may make an account: anyone ("open") or only someone holding an invitation ("invitation"); checked.
SIGNUP_MODE = env.str("CLOUDCTL_SIGNUP", default="open")
# Teams one account may create on the members' side (each is a machine, a volume and backups).
MAX_TEAMS_PER_USER = env.int("CLOUDCTL_MAX_TEAMS_PER_USER", default=5)
# Invitations (sends and resends) one account may mail per hour: the control plane mails any address typed.
INVITATIONS_PER_HOUR = env.int("CLOUDCTL_INVITATIONS_PER_HOUR", default=50)
# How long a team instance trusts an actor before asking the control plane again (docs/sso.md): removing a
# member, changing a role, disabling a user or signing out takes effect on every instance within this.
SSO_REVALIDATE_SECONDS = env.int("CLOUDCTL_SSO_REVALIDATE_SECONDS", default=60)
# The S3 endpoint instances use; empty means AWS. The embedded run uses the local S3 server.
INSTANCE_S3_ENDPOINT = env.str("CLOUDCTL_INSTANCE_S3_ENDPOINT", default=env.str("AWS_ENDPOINT_URL", default=""))
INSTANCE_S3_REGION = env.str("CLOUDCTL_INSTANCE_S3_REGION", default=env.str("AWS_DEFAULT_REGION", default="us-east-1"))
# An instance exits after this uptime so it restarts with fresh credentials (below CREDENTIALS_TTL).
INSTANCE_MAX_AGE = env.str("CLOUDCTL_INSTANCE_MAX_AGE", default="11h")
# Scale to zero after this much idle time (empty: never). Fly restarts the machine on the next request.
INSTANCE_IDLE_TIMEOUT = env.str("CLOUDCTL_INSTANCE_IDLE_TIMEOUT", default="")
# Local backend: the instance's own virtualenv (built from instance/requirements.txt) and the "volumes".
LOCAL_INSTANCE_PYTHON = env.str("CLOUDCTL_LOCAL_INSTANCE_PYTHON", default=str(BASE_DIR / ".venv-instance" / "bin" / "python"))
LOCAL_INSTANCES_DIR = Path(env.str("CLOUDCTL_LOCAL_INSTANCES_DIR", default=str(STATE_DIR / "instances")))
# How long a new instance may take to answer HTTP before provisioning counts as failed.
INSTANCE_HEALTH_TIMEOUT = env.int("CLOUDCTL_INSTANCE_HEALTH_TIMEOUT", default=120)

# --- Containers (CLOUDCTL_MACHINE_BACKEND=instances.backends.container.ContainerBackend): podman on this host ----
CONTAINER_PODMAN = env.str("CLOUDCTL_CONTAINER_PODMAN", default="podman")
CONTAINER_CONTAINERS_CONF = env.str("CLOUDCTL_CONTAINER_CONTAINERS_CONF",
                                    default=str(BASE_DIR / "podman" / "containers.conf"))
# What a deployed image must start with when CLOUDCTL_ALLOWED_IMAGE_PREFIXES is unset (set CLOUDCTL_INSTANCE_IMAGE
# to an image of it, e.g. localhost/cloudctl-instance:latest, which `make images` builds).
CONTAINER_IMAGE_REPOSITORY = env.str("CLOUDCTL_CONTAINER_IMAGE_REPOSITORY", default="localhost/cloudctl-instance")
CONTAINER_MEMORY = env.str("CLOUDCTL_CONTAINER_MEMORY", default="512m")
CONTAINER_CPUS = env.str("CLOUDCTL_CONTAINER_CPUS", default="1")
CONTAINER_PIDS_LIMIT = env.int("CLOUDCTL_CONTAINER_PIDS_LIMIT", default=256)
CONTAINER_USER = env.str("CLOUDCTL_CONTAINER_USER", default="65534:65534")
CONTAINER_NAME_PREFIX = env.str("CLOUDCTL_CONTAINER_NAME_PREFIX", default="cloudctl-")

# --- Fly Machines (CLOUDCTL_MACHINE_BACKEND=instances.backends.fly.FlyBackend) -------------------------------
FLY_API_URL = env.str("CLOUDCTL_FLY_API_URL", default="https://api.machines.dev/v1")
FLY_API_TOKEN = env.str("CLOUDCTL_FLY_API_TOKEN", default="")
FLY_ORG = env.str("CLOUDCTL_FLY_ORG", default="personal")
# Team apps are `<prefix>-team-<id>`: Fly app names are global, the prefix keeps ours apart.
FLY_APP_PREFIX = env.str("CLOUDCTL_FLY_APP_PREFIX", default="cloudctl")
FLY_REGION = env.str("CLOUDCTL_FLY_REGION", default="ord")
FLY_VOLUME_SIZE_GB = env.int("CLOUDCTL_FLY_VOLUME_SIZE_GB", default=1)
FLY_GUEST = {
    "cpu_kind": env.str("CLOUDCTL_FLY_CPU_KIND", default="shared"),
    "cpus": env.int("CLOUDCTL_FLY_CPUS", default=1),
    "memory_mb": env.int("CLOUDCTL_FLY_MEMORY_MB", default=1024),
}
# How long to wait for a machine to start, and for a new one to show up in listings (eventual consistency).
FLY_START_TIMEOUT = env.int("CLOUDCTL_FLY_START_TIMEOUT", default=120)
FLY_VISIBILITY_GRACE = env.float("CLOUDCTL_FLY_VISIBILITY_GRACE", default=15.0)
FLY_LEASE_TTL = env.int("CLOUDCTL_FLY_LEASE_TTL", default=13)  # flyctl's, refreshed every third of it
# How long an updated machine may take to pass its service checks before the update counts as failed.
FLY_HEALTH_TIMEOUT = env.int("CLOUDCTL_FLY_HEALTH_TIMEOUT", default=120)
# Each team is served at <scheme>://<slug>.<TEAMS_DOMAIN>[:<port>]/ by the router (router/): on Fly its process
# group answers `*.<TEAMS_DOMAIN>` (a wildcard certificate) with fly-replay; `manage.py dev` sets `localhost`,
# `http` and the embedded router's port (browsers and curl resolve *.localhost to loopback).
TEAMS_DOMAIN = env.str("CLOUDCTL_TEAMS_DOMAIN", default="teams.example.com")
TEAMS_URL_SCHEME = env.str("CLOUDCTL_TEAMS_URL_SCHEME", default="https")
# 0: the scheme's default port (no port in the URL).
TEAMS_URL_PORT = env.int("CLOUDCTL_TEAMS_URL_PORT", default=0)

# --- Router (router/) -----------------------------------------------------------------------------------
# The key every team's routing secret is derived from (HMAC over the team id and its token generation): the
# router sends the secret (fly-replay `state`), the instance serves only requests that carry its own.
ROUTER_KEY = env.str("CLOUDCTL_ROUTER_KEY", default="") or _generated_secret("router-key")
# The embedded router's port (`manage.py dev`): http://<slug>.localhost:<port>/.
ROUTER_PORT = env.int("CLOUDCTL_ROUTER_PORT", default=8080)
# How long the embedded router holds a request while the team's instance wakes or restarts before it answers a
# "waking up" page with Retry-After; on Fly, the replay's `timeout`.
ROUTER_WAKE_TIMEOUT = env.float("CLOUDCTL_ROUTER_WAKE_TIMEOUT", default=60.0)
# How long a routing decision may be served from the router's memory: changes are visible within this bound.
ROUTER_TABLE_MAX_AGE = env.float("CLOUDCTL_ROUTER_TABLE_MAX_AGE", default=0.5)
# Requests whose body is larger than this (or of unknown length: chunked) are never replayed on Fly (Fly
# replays at most 1 MB): the router reverse-proxies them into the team's private network instead.
ROUTER_REPLAY_MAX_BODY = env.int("CLOUDCTL_ROUTER_REPLAY_MAX_BODY", default=1_000_000)
# Where the Fly router sends what it does not replay: the Machine's address on the team's private network.
ROUTER_FLY_UPSTREAM = env.str("CLOUDCTL_ROUTER_FLY_UPSTREAM", default="http://{machine}.vm.{app}.internal:8080/")
# The router's Fly app (fly.router.toml's `app`): it holds the public IPs and the wildcard certificate
# `*.<TEAMS_DOMAIN>` that `manage.py provision_domain` requests with the control plane's Fly token.
ROUTER_FLY_APP = env.str("CLOUDCTL_ROUTER_FLY_APP", default="cloudctl-router")

# --- Logging -----------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"redact_signal_urls": {"()": "cloudctl.logs.RedactSignalURLs"},
                "skip_too_many_requests": {"()": "cloudctl.logs.SkipTooManyRequests"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain",
                             "filters": ["redact_signal_urls"]}},
    "root": {"handlers": ["console"], "level": env.str("CLOUDCTL_LOG_LEVEL", default="INFO")},
    "loggers": {
        # botocore at DEBUG logs request bodies and headers, session tokens included.
        "botocore": {"level": "WARNING"},
        "boto3": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "django.request": {"filters": ["skip_too_many_requests"]},
    },
}

# --- Operator dashboard, instance signals, metrics ----------------------------------------------------
# A running instance whose last backup heartbeat (Litestream's `heartbeat-url`) is older than this many
# seconds is flagged stale. Keep it well above the instances' heartbeat interval (CLOUDCTL_HEARTBEAT_INTERVAL).
BACKUP_STALE_AFTER = env.int("CLOUDCTL_BACKUP_STALE_AFTER", default=900)
# How often each instance's Litestream pings its heartbeat URL (Litestream's minimum is 1m).
INSTANCE_HEARTBEAT_INTERVAL = env.str("CLOUDCTL_HEARTBEAT_INTERVAL", default="1m")
# How often each instance fingerprints its databases at a txid Litestream synced and reports it, for the restore
# drills to compare (instance/fingerprint.py): a number and s, m or h. Each report reads every row once.
INSTANCE_FINGERPRINT_INTERVAL = env.str("CLOUDCTL_FINGERPRINT_INTERVAL", default="10m")
# How far back every team's replica reaches: Litestream's `snapshot.retention`, written into each instance's
# Litestream config (a number and s, m or h: Litestream takes no days). Litestream's own default is 24h.
BACKUP_RETENTION = env.str("CLOUDCTL_BACKUP_RETENTION", default="24h")
# `GET /private/metrics` requires `Authorization: Bearer <this>` (Prometheus' `authorization` setting).
METRICS_TOKEN = env.str("CLOUDCTL_METRICS_TOKEN", default="") or _generated_secret("metrics-token")
DASHBOARD_PAGE_SIZE = env.int("CLOUDCTL_DASHBOARD_PAGE_SIZE", default=50)
# The regions a new team may be placed in (the first is the default).
REGIONS = env.list("CLOUDCTL_REGIONS", default=[FLY_REGION])

# --- Mail (sign-in mail: password resets, later invitations) ---------------------------------------------
# SMTP in production (`EMAIL_URL=smtp+tls://user:password@host:587`); without it each message is a file under
# the state directory's mail/ (no SMTP server is assumed: a password reset would otherwise fail).
if "EMAIL_URL" in env:
    vars().update(env.email_url("EMAIL_URL"))
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = STATE_DIR / "mail"
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="cloudctl <noreply@localhost>")

# --- Sign-in (django-allauth; see cloudctl/accounts.py) ---------------------------------------------------
# One login for everyone: the admin's login URL (where the dashboard sends people) hands over to this one.
LOGIN_URL = "account_login"
# Where a sign-in without `next` lands: staff on the dashboard, members on their teams (AccountAdapter).
LOGIN_REDIRECT_URL = "dashboard:home"
AUTHENTICATION_BACKENDS = ["allauth.account.auth_backends.AuthenticationBackend"]
ACCOUNT_ADAPTER = "cloudctl.accounts.AccountAdapter"
# Members sign in by email; staff (accounts made by operators) by username too.
ACCOUNT_LOGIN_METHODS = {"email", "username"}
# Sign-up asks for an email and a password only (allauth makes up the username); open or by invitation only
# (SIGNUP_MODE, AccountAdapter.is_open_for_signup). Each address is proven by mail before its first sign-in.
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[cloudctl] "
ACCOUNT_FORMS = {"signup": "cloudctl.accounts.SignupForm"}
# No mail to addresses without an account (allauth would otherwise mail them that no account exists).
ACCOUNT_EMAIL_UNKNOWN_ACCOUNTS = False
# Failed sign-ins per address and per account ("<count>/<window><s|m|h>/<ip|key>", allauth's syntax). Past
# either, even the right password is refused until the window has slid past the failures. The TOTP step
# counts its failures per account the same way.
ACCOUNT_RATE_LIMITS = {
    "login_failed": env.str("CLOUDCTL_LOGIN_FAILED_RATE_LIMIT", default="20/15m/ip,5/15m/key"),
}
# Per-address limits need the real client address behind Fly's edge: the same rule as the private API's
# (CLOUDCTL_CLIENT_IP_HEADER, believed only from CLOUDCTL_TRUSTED_PROXIES; cloudctl.accounts.AccountAdapter).
# Staff must pass TOTP at sign-in; those without it enroll before reaching the dashboard or the admin.
STAFF_REQUIRE_2FA = env.bool("CLOUDCTL_STAFF_REQUIRE_2FA", default=True)
MFA_ADAPTER = "cloudctl.accounts.MFAAdapter"
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "cloudctl"
# One 30-second step either side: a phone's clock a little off, or a code typed as it changes.
MFA_TOTP_TOLERANCE = 1
