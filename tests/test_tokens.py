import base64

import pytest
from itsdangerous import URLSafeSerializer

from teams.models import Team
from teams.tokens import SALT, InvalidToken, TeamDisabled, rotate_team_token, team_token, verify_team_token


def test_token_names_team_and_generation(make_team):
    team = make_team()
    assert verify_team_token(team_token(team)) == team


def test_rotation_revokes_the_old_token_at_once(make_team):
    team = make_team()
    old = team_token(team)
    new = rotate_team_token(team)
    assert new != old
    assert team.token_generation == 2
    with pytest.raises(InvalidToken) as refused:
        verify_team_token(old)
    assert refused.value.reason == "revoked"
    assert verify_team_token(new) == team


def test_signing_key_rotation_keeps_old_tokens_valid(make_team, settings):
    team = make_team()
    settings.TOKEN_KEYS = ["key-one"]
    issued_with_old_key = team_token(team)
    settings.TOKEN_KEYS = ["key-one", "key-two"]
    assert verify_team_token(issued_with_old_key) == team
    assert team_token(team) != issued_with_old_key  # the newest key signs
    settings.TOKEN_KEYS = ["key-two"]
    with pytest.raises(InvalidToken):
        verify_team_token(issued_with_old_key)


def test_token_signed_with_an_unknown_key_is_refused(make_team):
    team = make_team()
    forged = URLSafeSerializer("not-our-key", salt=SALT).dumps({"team": team.pk, "gen": 1})
    with pytest.raises(InvalidToken) as refused:
        verify_team_token(forged)
    assert refused.value.reason == "bad_signature"


def test_token_with_another_salt_is_refused(make_team, settings):
    team = make_team()
    other_purpose = URLSafeSerializer(settings.TOKEN_KEYS, salt="django.core.signing").dumps({"team": team.pk, "gen": 1})
    with pytest.raises(InvalidToken):
        verify_team_token(other_purpose)


def mutations(token):
    payload, signature = token.split(".")
    padded = payload + "=" * (-len(payload) % 4)
    return {
        "truncated": token[:-1],
        "truncated_signature": f"{payload}.{signature[:10]}",
        "payload_only": payload,
        "padded_base64": f"{padded}.{signature}" if padded != payload else f"{payload}==.{signature}",
        "reencoded_whole": base64.urlsafe_b64encode(token.encode()).decode(),
        "uppercased": token.upper(),
        # Not the last character: its low bits are base64 padding, so some flips decode to the same signature
        # (a token ending in B, C or D flipped to A verified, one run in about twenty).
        "flipped_character": token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:],
        "percent_encoded": token.replace(".", "%2E"),
        "whitespace": f" {token}",
    }


@pytest.mark.parametrize("mutation", list(mutations("eyJ0ZWFtIjoxLCJnZW4iOjF9.abcdefghijklmnopqrstuvwxyz0")))
def test_altered_tokens_are_refused(make_team, mutation):
    team = make_team()
    token = team_token(team)
    altered = mutations(token)[mutation]
    assert altered != token
    with pytest.raises(InvalidToken):
        verify_team_token(altered)


def test_a_validly_signed_token_for_another_generation_or_team_is_refused(make_team, settings):
    team = make_team()
    signer = URLSafeSerializer(settings.TOKEN_KEYS, salt=SALT)
    for payload in ({"team": team.pk, "gen": 2}, {"team": team.pk + 999, "gen": 1},
                    {"team": team.pk, "gen": True}, {"team": str(team.pk), "gen": 1}, [team.pk, 1]):
        with pytest.raises(InvalidToken):
            verify_team_token(signer.dumps(payload))


def test_disabled_team_is_refused_and_enabled_again_accepted(make_team):
    team = make_team(status=Team.Status.DISABLED)
    token = team_token(team)
    with pytest.raises(TeamDisabled):
        verify_team_token(token)
    team.status = Team.Status.ACTIVE
    team.save()
    assert verify_team_token(token) == team


def test_deleted_team_is_refused(make_team):
    team = make_team()
    token = team_token(team)
    team.delete()
    with pytest.raises(InvalidToken) as refused:
        verify_team_token(token)
    assert refused.value.reason == "unknown_team"
