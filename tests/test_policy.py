import fnmatch
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credentials.policy import (
    MAX_SESSION_POLICY_CHARS, policy_document, team_prefix, team_read_only_session_policy, team_session_policy,
)


def statement(policy, sid):
    return next(s for s in policy["Statement"] if s["Sid"] == sid)


def object_allowed(policy, bucket, key):
    """StringLike-style match of an object ARN against the object statement's resource."""
    resource = statement(policy, "TeamObjects")["Resource"]
    return fnmatch.fnmatchcase(f"arn:aws:s3:::{bucket}/{key}", resource)


def listing_allowed(policy, prefix):
    patterns = statement(policy, "ListTeamPrefix")["Condition"]["StringLike"]["s3:prefix"]
    return any(fnmatch.fnmatchcase(prefix, pattern) for pattern in patterns)


def test_prefix_ends_with_a_slash():
    assert team_prefix(1) == "team-1/"


@pytest.mark.parametrize("bad", [0, -1, True, "1", 1.0, None])
def test_prefix_refuses_anything_but_a_positive_int(bad):
    with pytest.raises(ValueError):
        team_prefix(bad)


def test_policy_grants_litestream_exactly_what_it_needs():
    policy = team_session_policy("backups", 42)
    listing = statement(policy, "ListTeamPrefix")
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Resource"] == "arn:aws:s3:::backups"
    objects = statement(policy, "TeamObjects")
    assert sorted(objects["Action"]) == [
        "s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    assert objects["Resource"] == "arn:aws:s3:::backups/team-42/*"
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    assert len(policy["Statement"]) == 2


def test_team_1_never_matches_team_10():
    policy = team_session_policy("backups", 1)
    assert object_allowed(policy, "backups", "team-1/db/ltx/0/1.ltx")
    assert not object_allowed(policy, "backups", "team-10/db/ltx/0/1.ltx")
    assert not object_allowed(policy, "backups", "team-1")
    assert listing_allowed(policy, "team-1/")
    assert listing_allowed(policy, "team-1/db/")
    assert not listing_allowed(policy, "team-1")
    assert not listing_allowed(policy, "team-10/")
    assert not listing_allowed(policy, "")


def test_other_buckets_are_not_granted():
    policy = team_session_policy("backups", 1)
    assert not object_allowed(policy, "backups-other", "team-1/x")


@given(team_id=st.integers(min_value=1, max_value=10**18),
       bucket=st.from_regex(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", fullmatch=True))
def test_policy_stays_under_the_session_policy_limit(team_id, bucket):
    document = policy_document(team_session_policy(bucket, team_id))
    assert len(document) <= MAX_SESSION_POLICY_CHARS
    assert json.loads(document) == team_session_policy(bucket, team_id)


def test_oversized_policies_are_refused():
    policy = {"Version": "2012-10-17", "Statement": [{"Sid": "x" * MAX_SESSION_POLICY_CHARS}]}
    with pytest.raises(ValueError, match="over 2048"):
        policy_document(policy)


@pytest.mark.parametrize("make_policy", [team_session_policy, team_read_only_session_policy])
@pytest.mark.parametrize("bucket", ["", "Backups", "a", "bad/bucket", "b*"])
def test_bucket_names_are_validated(bucket, make_policy):
    with pytest.raises(ValueError):
        make_policy(bucket, 1)


def test_read_only_policy_grants_list_and_get_only():
    policy = team_read_only_session_policy("backups", 42)
    listing = statement(policy, "ListTeamPrefix")
    assert (listing["Action"], listing["Resource"]) == ("s3:ListBucket", "arn:aws:s3:::backups")
    objects = statement(policy, "TeamObjects")
    assert objects["Action"] == ["s3:GetObject"]  # HeadObject is GetObject's; no Put, Delete or Abort
    assert objects["Resource"] == "arn:aws:s3:::backups/team-42/*"
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    assert len(policy["Statement"]) == 2
    every_action = json.dumps(policy)
    assert "Put" not in every_action and "Delete" not in every_action and "s3:*" not in every_action


def test_read_only_policy_keeps_team_1_from_team_10():
    policy = team_read_only_session_policy("backups", 1)
    assert object_allowed(policy, "backups", "team-1/data.db/ltx/0/1.ltx")
    assert not object_allowed(policy, "backups", "team-10/data.db/ltx/0/1.ltx")
    assert listing_allowed(policy, "team-1/data.db/ltx/")
    assert not listing_allowed(policy, "team-10/")
    assert not listing_allowed(policy, "team-1")
    assert not listing_allowed(policy, "")


@given(team_id=st.integers(min_value=1, max_value=10**18),
       bucket=st.from_regex(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", fullmatch=True))
def test_read_only_policy_stays_under_the_session_policy_limit(team_id, bucket):
    document = policy_document(team_read_only_session_policy(bucket, team_id))
    assert len(document) <= MAX_SESSION_POLICY_CHARS
    assert json.loads(document) == team_read_only_session_policy(bucket, team_id)
