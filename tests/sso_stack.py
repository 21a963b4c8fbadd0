"""The single sign-on in its production topology, on one machine, for tests/test_sso_browser.py and
tests/test_sso_hostile.py.

In production the control plane (https://cloudctl.example.com/) and the teams (https://<slug>.teams.example.com/)
share a registrable parent, so a team's page can set cookies on that parent which the browser then sends to the
control plane ("cookie tossing"). On http://localhost that cannot be tried: Chromium refuses `Domain=localhost`
cookies, and takes Secure cookies over plain http from localhost only. So here, as in production:

- the control plane is https://app.cloudctl.test:<port>/ and the teams https://<slug>.teams.cloudctl.test:<port>/,
  each behind a `TlsFront` (a self-signed certificate for *.cloudctl.test) to the live server and to the embedded
  router; Chromium resolves *.cloudctl.test to 127.0.0.1 (`--host-resolver-rules`) and accepts the certificate;
- instances reach the private API at the live server's own address (http://localhost:<port>, the private network);
- the control plane's cookies are set as production sets them: every `SESSION_COOKIE_*` and `CSRF_COOKIE_*`
  setting is read from the settings module under `CLOUDCTL_HTTPS=true` (`production_cookie_settings`).
"""

from __future__ import annotations

import asyncio
import base64
import email
import hashlib
import json
import re
import secrets
import ssl
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.contrib.messages.storage.cookie import CookieStorage

from teams.routing import team_url

from .routing import free_port
from .test_browser import CHROMIUM, chromium
from .test_router_stack import router_stack

# The parent the control plane and the teams share, as cloudctl.example.com and *.teams.example.com do.
PARENT_DOMAIN = "cloudctl.test"
CONTROL_PLANE_HOST = f"app.{PARENT_DOMAIN}"
TEAMS_DOMAIN = f"teams.{PARENT_DOMAIN}"
PASSWORD = "member-password-123"
# Short, so that a removal reaches the instance within a few seconds (docs/sso.md: at most this old).
REVALIDATE_SECONDS = 2
START_TIMEOUT_MS = 120_000
# Any other step of a page: a refusal shows at once, a page takes a moment on a busy machine.
STEP_TIMEOUT_MS = 30_000
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="Debian's chromium is missing: apt-get install -y chromium")


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def self_signed_certificate(directory: Path) -> Certificate:
    """A certificate for the parent domain and every name under it that the tests use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PARENT_DOMAIN)])
    now = datetime.now(timezone.utc)
    names = [x509.DNSName(PARENT_DOMAIN), x509.DNSName(f"*.{PARENT_DOMAIN}"), x509.DNSName(f"*.{TEAMS_DOMAIN}")]
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .sign(key, hashes.SHA256()))
    paths = Certificate(directory / "cert.pem", directory / "key.pem")
    paths.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths


# Dropped from a head the front passes on: the front decides the connection's fate and the scheme.
FRONT_REPLACED_HEADERS = {b"connection", b"keep-alive", b"proxy-connection", b"x-forwarded-proto"}


def rewritten_head(head: bytes, *added: bytes) -> bytes:
    first_line, *fields = head.rstrip(b"\r\n").split(b"\r\n")
    kept = [field for field in fields if field.split(b":", 1)[0].strip().lower() not in FRONT_REPLACED_HEADERS]
    return b"\r\n".join([first_line, *kept, *added]) + b"\r\n\r\n"


def forwarded_head(head: bytes) -> bytes:
    """A request head as the front passes it on: marked https (what the control plane believes from its proxy,
    `SECURE_PROXY_SSL_HEADER`), one request per connection (so the front never parses a body)."""
    return rewritten_head(head, b"X-Forwarded-Proto: https", b"Connection: close")


def answered_head(head: bytes) -> bytes:
    """An answer's head as the front passes it on: the client is told the connection ends with it."""
    return rewritten_head(head, b"Connection: close")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:  # ssl.SSLError included: the other side went away
        pass


class TlsFront:
    """TLS in front of a plain-HTTP server on 127.0.0.1, as Fly's edge is in front of the control plane and the
    router: its own event loop in a thread."""

    def __init__(self, upstream_port: int, certificate: Certificate):
        self.upstream_port = upstream_port
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate.cert, certificate.key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context), self._loop).result()
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            client_writer.close()
            return
        upstream_writer.write(forwarded_head(head))
        to_upstream = asyncio.ensure_future(pipe(client_reader, upstream_writer))
        try:
            client_writer.write(answered_head(await upstream_reader.readuntil(b"\r\n\r\n")))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # closed without an answer: so is the client's connection, below
        else:
            await pipe(upstream_reader, client_writer)
        to_upstream.cancel()
        for writer in (upstream_writer, client_writer):
            try:
                writer.close()
            except OSError:
                pass

    def close(self) -> None:
        async def stop():
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@dataclass
class SsoStack:
    """The control plane at `public_url`, the teams at `team_url(slug)`, both through TLS fronts (to the live
    server, and to the router which runs with a worker as `routed` does); mail as files under `mail_dir`."""

    public_url: str
    mail_dir: Path

    def url(self, path: str) -> str:
        return f"{self.public_url}{path}"

    def team_url(self, slug: str, path: str = "/") -> str:
        return team_url(slug) + path.lstrip("/")

    def control_plane(self, *, cookie: str | None = None) -> httpx.Client:
        """A client of the control plane's public host (no redirects followed), sending exactly `cookie`."""
        return self._client(self.public_url, cookie)

    def team(self, slug: str, *, cookie: str | None = None) -> httpx.Client:
        """A client of a team's name, through its front and the router."""
        return self._client(team_url(slug).rstrip("/"), cookie)

    @staticmethod
    def _client(base: str, cookie: str | None) -> httpx.Client:
        """httpx resolves no *.cloudctl.test: it connects to 127.0.0.1 and names the host in `Host`."""
        host = httpx.URL(base).netloc.decode()
        headers = {"Host": host, **({"Cookie": cookie} if cookie is not None else {})}
        return httpx.Client(base_url=f"https://127.0.0.1:{httpx.URL(base).port}", headers=headers, verify=False,
                            timeout=60, follow_redirects=False)


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory) -> Certificate:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


COOKIE_SETTING = re.compile(r"^(SESSION|CSRF)_COOKIE_[A-Z_]+$")


@pytest.fixture(scope="session")
def production_cookie_settings(tmp_path_factory) -> dict:
    """The control plane's cookie settings as production has them (`CLOUDCTL_HTTPS=true`), not the embedded
    run's: what a browser must be protected by."""
    from .test_settings import PRODUCTION_ENV, manage

    show = ("import json, re; from django.conf import settings; print(json.dumps({name: getattr(settings, name) "
            f"for name in dir(settings) if re.match({COOKIE_SETTING.pattern!r}, name)}}))")
    result = manage("shell", "--no-imports", "-c", show,
                    env={**PRODUCTION_ENV, "CLOUDCTL_STATE_DIR": str(tmp_path_factory.mktemp("production"))})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def sso_stack(local, live_server, settings, tmp_path, tls_certificate,  # noqa: F811
              production_cookie_settings) -> Iterator[SsoStack]:
    router_port = free_port()
    control_front = TlsFront(live_server.thread.port, tls_certificate)
    teams_front = TlsFront(router_port, tls_certificate)
    settings.PUBLIC_URL = f"https://{CONTROL_PLANE_HOST}:{control_front.port}"
    settings.PRIVATE_API_URL = live_server.url  # the real sign-in API, whatever `local` points instances at
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, CONTROL_PLANE_HOST]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    for name, value in production_cookie_settings.items():
        setattr(settings, name, value)
    settings.TEAMS_DOMAIN, settings.TEAMS_URL_SCHEME, settings.TEAMS_URL_PORT = TEAMS_DOMAIN, "https", teams_front.port
    settings.SSO_REVALIDATE_SECONDS = REVALIDATE_SECONDS
    settings.SIGNUP_MODE = "open"
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = tmp_path / "mail"
    try:
        with router_stack(settings, tmp_path, port=router_port):
            yield SsoStack(public_url=settings.PUBLIC_URL, mail_dir=settings.EMAIL_FILE_PATH)
    finally:
        control_front.close()
        teams_front.close()


@pytest.fixture
def sso_browser(monkeypatch):
    """Chromium resolving *.cloudctl.test to this machine and accepting the fronts' certificate."""
    with chromium(monkeypatch, f"--host-resolver-rules=MAP *.{PARENT_DOMAIN} 127.0.0.1, MAP {PARENT_DOMAIN} 127.0.0.1",
                  "--ignore-certificate-errors") as browser:
        yield browser


def new_page(browser):
    """A page in its own context: its own cookie jar, as another person's browser."""
    page = browser.new_context(ignore_https_errors=True).new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    return page


# --- people ----------------------------------------------------------------------------------------------

def verified_user(username: str, *, email_address: str | None = None):
    """An account as sign-up and the verification mail leave it."""
    address = email_address or f"{username}@example.com"
    user = get_user_model().objects.create_user(username, email=address, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=address, verified=True, primary=True)
    return user


def sign_in(page, stack: SsoStack, login: str, *, next_path: str = "/teams/") -> None:
    """The control plane's sign-in page, as a member uses it."""
    page.goto(stack.url(f"/accounts/login/?next={next_path}"))
    page.fill("#id_login", login)
    page.fill("#id_password", PASSWORD)
    page.click("form:has(#id_password) [type=submit]")
    page.wait_for_load_state()


def team_actor_email(page, stack: SsoStack, slug: str) -> str | None:
    """Who the team's Datasette takes the browser for (None: nobody, or the browser was sent elsewhere)."""
    page.goto(stack.team_url(slug, "/-/actor.json"))
    if not page.url.startswith(stack.team_url(slug)):
        return None
    try:
        actor = json.loads(page.inner_text("body")).get("actor") or {}
    except ValueError:  # a refusal's page
        return None
    return actor.get("email")


# --- mail ------------------------------------------------------------------------------------------------

def mails(mail_dir: Path) -> list[email.message.Message]:
    """Every message Django's file backend wrote, oldest first (one file per connection, messages separated by
    a line of 79 dashes)."""
    found = []
    for path in sorted(mail_dir.glob("*.log"), key=lambda path: path.stat().st_mtime) if mail_dir.exists() else []:
        for chunk in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
            if chunk.strip():
                found.append(email.message_from_bytes(chunk))
    return found


def link_in_mail(mail_dir: Path, to: str, pattern: str) -> str | None:
    """The first URL matching `pattern` in the newest mail to `to`; None if no such mail yet."""
    for message in reversed(mails(mail_dir)):
        if to not in message.get("To", ""):
            continue
        bodies = [part.get_payload(decode=True).decode() for part in message.walk()
                  if part.get_content_type() == "text/plain"]
        for url in re.findall(r"https?://[^\s\"'<>]+", "\n".join(bodies)):
            if re.search(pattern, url):
                return url
    return None


# --- the single sign-on's own protocol (docs/sso.md) ----------------------------------------------------

@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> "Pkce":
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


def callback_uri(slug: str) -> str:
    return team_url(slug) + "-/sso/callback"


def authorize_query(team, pkce: Pkce, *, state: str | None = None) -> dict[str, str]:
    return {"team": str(team.pk), "redirect_uri": callback_uri(team.slug), "state": state or secrets.token_urlsafe(24),
            "code_challenge": pkce.challenge, "code_challenge_method": "S256"}


# --- the hostile instance --------------------------------------------------------------------------------

# A customer's plugin, dropped into the team's <DATA_DIR>/plugins/ before its instance starts (loaded as every
# customer plugin is). As hostile as a plugin can be: its ASGI wrapper goes around Datasette's whole application,
# outside every `asgi_wrapper` hook (the sign-in gate and the router guard included), so it records every request
# the instance receives, headers and cookies, sign-in callbacks too, in <DATA_DIR>/recorded.jsonl.
RECORDER_PLUGIN = '''
"""Records every request this instance receives (tests/sso_stack.py)."""
import json
import os
from pathlib import Path

from datasette.app import Datasette

RECORD = Path(os.environ.get("DATA_DIR") or Path(__file__).resolve().parent.parent) / "recorded.jsonl"


def cookies(headers):
    found = {}
    for name, value in headers:
        if name.lower() == "cookie":
            for pair in value.split(";"):
                key, _, cookie_value = pair.strip().partition("=")
                if key:
                    found.setdefault(key, []).append(cookie_value)
    return found


def recording(app):
    async def record(scope, receive, send):
        if scope["type"] == "http":
            headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
            entry = {"method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode("latin-1"),
                     "headers": headers, "cookies": cookies(headers)}
            with RECORD.open("a") as record_file:
                record_file.write(json.dumps(entry) + "\\n")
        await app(scope, receive, send)
    return record


whole_application = Datasette.app
Datasette.app = lambda datasette: recording(whole_application(datasette))
'''
RECORD_NAME = "recorded.jsonl"


def recorded_requests(data_dir: Path) -> list[dict]:
    path = data_dir / RECORD_NAME
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def control_plane_cookie_names(settings, jar: Iterable[dict]) -> set[str]:
    """The names of every cookie the control plane sets: its settings' (session, CSRF, language, messages) and
    whatever the browser holds for its host after signing in (allauth's included)."""
    return {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME, settings.LANGUAGE_COOKIE_NAME,
            CookieStorage.cookie_name, *(cookie["name"] for cookie in jar)}


def control_plane_leaks(records: Iterable[dict], names: set[str], values: set[str]) -> list[str]:
    """What of the control plane reached the instance: a cookie by one of its names, or the value of one of its
    cookies anywhere (any header, the query string) under any name."""
    leaks = []
    for record in records:
        where = f"{record['method']} {record['path']}"
        leaks += [f"{where}: cookie {name}" for name in record["cookies"] if name in names]
        carried = [record["query"], *(value for _, value in record["headers"])]
        leaks += [f"{where}: the value of a control-plane cookie" for value in values
                  if any(value in text for text in carried)]
    return leaks
