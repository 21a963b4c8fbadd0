import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from credentials.tokens import InvalidToken, verify_team_token
from teams.models import Team


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_team_assigns_an_immutable_prefix(db):
    out, _ = run("create_team", "acme", "--name", "Acme Newsroom")
    team = Team.objects.get(slug="acme")
    assert team.name == "Acme Newsroom"
    assert team.storage_prefix == f"team-{team.pk}/"
    assert f"prefix team-{team.pk}/" in out


@pytest.mark.parametrize("slug, message", [
    ("Has Spaces", "lowercase letters"),
    ("trailing-", "lowercase letters"),
    ("a" * 64, "lowercase letters"),
    ("admin", "reserved"),
])
def test_create_team_rejects_bad_slugs(db, slug, message):
    with pytest.raises(CommandError, match=message):
        run("create_team", slug)
    assert not Team.objects.exists()


def test_create_team_rejects_a_taken_slug(db):
    run("create_team", "acme")
    with pytest.raises(CommandError, match="already exists"):
        run("create_team", "acme")


def test_team_token_prints_the_current_token(db):
    run("create_team", "acme")
    token, _ = run("team_token", "acme")
    assert verify_team_token(token.strip()).slug == "acme"


def test_rotate_token_revokes_the_old_one(db):
    run("create_team", "acme")
    old, _ = run("team_token", "acme")
    new, err = run("rotate_token", "acme")
    assert "generation 2" in err
    assert verify_team_token(new.strip()).slug == "acme"
    with pytest.raises(InvalidToken):
        verify_team_token(old.strip())


def test_unknown_team_is_a_clear_error(db):
    with pytest.raises(CommandError, match="no team with slug 'nope'"):
        run("team_token", "nope")


def test_check_isolation_takes_two_slugs_or_none(db):
    with pytest.raises(CommandError, match="two team slugs"):
        run("check_isolation", "only-one")
