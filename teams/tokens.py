"""Team tokens: signed (not encrypted) `{"team": <id>, "gen": <generation>}`.

The token is what a team's instance holds (a Fly secret). Nothing in the database can reproduce it without
the signing keys, and bumping the team's generation revokes it at once.
"""

import hmac
import re
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F
from itsdangerous import BadData, URLSafeSerializer

from .models import Team

# Separates this purpose from every other signer that might share a key (cookies, Django signing).
SALT = "cloudctl.team-token.v1"
# The value in a team's heartbeat URL (Litestream): the same claims under its own salt, so a signal URL is no
# token and a token no signal URL. Rotating the token revokes it.
SIGNAL_SALT = "cloudctl.instance-signal.v1"
# The value in a team's shutdown URL (datasette-scale-to-zero): the claims plus the instance's boot id, under
# another salt, so a heartbeat URL (which Litestream logs when a ping fails) is no shutdown URL, and a shutdown
# URL works only while the boot that received it is the team's current one.
SHUTDOWN_SALT = "cloudctl.instance-shutdown.v1"
# A boot id: random, chosen by the instance's entrypoint at each start (`X-Cloudctl-Boot` on its exchanges).
BOOT_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,64}")
# Real tokens are ~60 characters of URL-safe base64; anything else is refused before any parsing.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_\-.]{8,512}")


class InvalidToken(Exception):
    """The token does not name a team's current generation. `reason` is for the audit trail only.

    `team`: the team whose token it verifiably is (our signature, an old generation). `claimed_team_id`: the
    team it names without proof (a forged signature, or a team that no longer exists)."""

    def __init__(self, reason: str, team: Team | None = None, *, claimed_team_id: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.team = team
        self.claimed_team_id = claimed_team_id


class TeamDisabled(Exception):
    def __init__(self, team: Team):
        super().__init__(team.slug)
        self.team = team


def _serializer(salt: str) -> URLSafeSerializer:
    # A list of keys: the last signs, every one verifies.
    return URLSafeSerializer(settings.TOKEN_KEYS, salt=salt)


def team_token(team: Team) -> str:
    return _serializer(SALT).dumps({"team": team.pk, "gen": team.token_generation})


def signal_value(team: Team) -> str:
    return _serializer(SIGNAL_SALT).dumps({"team": team.pk, "gen": team.token_generation})


def shutdown_value(team: Team, boot: str) -> str:
    return _serializer(SHUTDOWN_SALT).dumps({"team": team.pk, "gen": team.token_generation, "boot": boot})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TokenClaims:
    """What a validly signed token says; not yet checked against the team's current state."""

    team_id: int
    generation: int
    boot: str | None = None  # shutdown values only


def read_team_token(token: str, *, salt: str = SALT) -> TokenClaims:
    """Check the token's (or, with SIGNAL_SALT / SHUTDOWN_SALT, a signal value's) shape and signature (no
    database); raise InvalidToken."""
    if not TOKEN_SHAPE.fullmatch(token):
        raise InvalidToken("malformed")
    serializer = _serializer(salt)
    try:
        # itsdangerous compares signatures with hmac.compare_digest.
        payload = serializer.loads(token)
    except BadData:
        raise InvalidToken("bad_signature", claimed_team_id=_claimed_team_id(serializer, token)) from None
    if not (isinstance(payload, dict) and _is_int(payload.get("team")) and _is_int(payload.get("gen"))):
        raise InvalidToken("bad_payload")
    if _claimable(payload["team"]) is None:
        # No team has this id, and one past 64 bits would overflow the query that looks it up.
        raise InvalidToken("unknown_team")
    boot = payload.get("boot")
    if salt == SHUTDOWN_SALT and not (isinstance(boot, str) and BOOT_SHAPE.fullmatch(boot)):
        raise InvalidToken("bad_payload")
    return TokenClaims(team_id=payload["team"], generation=payload["gen"], boot=boot if salt == SHUTDOWN_SALT else None)


# The largest id a claim may record (claimed_team_id is a 64-bit column); a larger one is no team's.
MAX_TEAM_ID = 2**63 - 1


def _claimable(team_id) -> int | None:
    """A claimed team id as the audit trail can store it, or None: no team has any other."""
    return team_id if _is_int(team_id) and 0 < team_id <= MAX_TEAM_ID else None


def _claimed_team_id(serializer: URLSafeSerializer, token: str) -> int | None:
    """The team a badly signed token names, for the audit trail only: nothing about it is true."""
    if token.startswith("."):
        return None  # a compressed payload: not inflated for a stranger
    _, payload = serializer.loads_unsafe(token)
    return _claimable(payload.get("team")) if isinstance(payload, dict) else None


def check_claims(claims: TokenClaims, team: Team | None) -> Team:
    """The team, if the claims name its current generation and it is active; else InvalidToken / TeamDisabled."""
    if team is None:
        raise InvalidToken("unknown_team", claimed_team_id=_claimable(claims.team_id))
    if not hmac.compare_digest(str(claims.generation).encode(), str(team.token_generation).encode()):
        raise InvalidToken("revoked", team=team)
    if not team.is_active:
        raise TeamDisabled(team)
    return team


def verify_team_token(token: str) -> Team:
    """Return the active team the token belongs to, or raise InvalidToken / TeamDisabled."""
    claims = read_team_token(token)
    return check_claims(claims, Team.objects.filter(pk=claims.team_id).first())


def rotate_team_token(team: Team) -> str:
    """Revoke the team's current token and return the new one."""
    Team.objects.filter(pk=team.pk).update(token_generation=F("token_generation") + 1)
    team.refresh_from_db(fields=["token_generation"])
    return team_token(team)
