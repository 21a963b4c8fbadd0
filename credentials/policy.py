"""The inline session policy that confines a team's STS credentials to `team-<id>/` of the backup bucket.

A pure function of (bucket, team id): it never sees request input. The effective rights of the vended
credentials are the intersection of this policy and the role's own policy.
"""

import json
import re

# AWS limit on the plaintext of inline + managed session policies.
MAX_SESSION_POLICY_CHARS = 2048
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def team_prefix(team_id: int) -> str:
    """`team-<id>/`; the trailing slash keeps team-1 from matching team-10/."""
    if not isinstance(team_id, int) or isinstance(team_id, bool) or team_id < 1:
        raise ValueError(f"team id must be a positive integer, not {team_id!r}")
    return f"team-{team_id}/"


def team_session_policy(bucket: str, team_id: int) -> dict:
    """The smallest policy Litestream needs to replicate and restore under the team's prefix."""
    # Replicate (PutObject, also covering multipart parts), restore (GetObject, HeadObject), retention and
    # compaction (DeleteObject(s)), and cleanup of failed multipart uploads.
    return _prefix_policy(bucket, team_id, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                            "s3:AbortMultipartUpload"])


def team_read_only_session_policy(bucket: str, team_id: int) -> dict:
    """What the control plane needs to read a team's replica (its restorable window, restore drills, restores):
    list and get (HeadObject included) under the team's prefix; nothing that writes or deletes, so a bug or a
    hostile replica's contents can never change the backup being read."""
    return _prefix_policy(bucket, team_id, ["s3:GetObject"])


def _prefix_policy(bucket: str, team_id: int, object_actions: list[str]) -> dict:
    if not BUCKET_NAME.fullmatch(bucket):
        raise ValueError(f"not an S3 bucket name: {bucket!r}")
    prefix = team_prefix(team_id)
    bucket_arn = f"arn:aws:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # Litestream lists its replica's files (ListObjectsV2 on `<prefix><db>/...`). Without the
                # condition the team could list every team's keys; a listing with no prefix has no
                # s3:prefix key and is denied.
                "Sid": "ListTeamPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            },
            {
                "Sid": "TeamObjects",
                "Effect": "Allow",
                "Action": object_actions,
                "Resource": f"{bucket_arn}/{prefix}*",
            },
        ],
    }


def policy_document(policy: dict) -> str:
    """The compact JSON sent to STS, checked against the size limit (botocore no longer checks it)."""
    document = json.dumps(policy, separators=(",", ":"))
    if len(document) > MAX_SESSION_POLICY_CHARS:
        raise ValueError(f"session policy is {len(document)} characters, over {MAX_SESSION_POLICY_CHARS}")
    return document
