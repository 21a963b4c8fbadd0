import time

import boto3

from cloudctl.local_s3 import REGION, LocalS3Server, free_port_set


def assume(config):
    sts = boto3.client("sts", endpoint_url=config.endpoint_url, region_name=REGION,
                       aws_access_key_id=config.admin_access_key, aws_secret_access_key=config.admin_secret_key)
    return sts.assume_role(RoleArn=config.client_environ()["CLOUDCTL_BACKUP_ROLE_ARN"], RoleSessionName="restart",
                           DurationSeconds=900)["Credentials"]["AccessKeyId"]


def test_assume_role_still_works_after_a_restart_on_the_same_data(tmp_path):
    """`make dev` restarts the server on the same data: keys and ports are kept and AssumeRole still works."""
    server = LocalS3Server(tmp_path / "s3", ports=free_port_set())
    try:
        config = server.start()
        assert assume(config)
        s3 = boto3.client("s3", endpoint_url=config.endpoint_url, region_name=REGION,
                          aws_access_key_id=config.admin_access_key, aws_secret_access_key=config.admin_secret_key)
        s3.put_object(Bucket=config.bucket, Key="team-1/x", Body=b"x")
        time.sleep(12)  # weed persists its identities in the background; a restart right away hides the bug
        server.stop()
        restarted = LocalS3Server(tmp_path / "s3")
        assert restarted.config == server.config  # keys and ports are kept
        server = restarted
        assert assume(server.start())
    finally:
        server.stop()
