"""An S3-compatible bucket for Socle's blob-store test, on a local moto server (PyPI `moto[server]`), driven
with boto3 — a real, independent S3 client.

    s3_bucket.py ENDPOINT setup                 creates an IAM user with an S3 policy, its access key and the
                                                bucket `docs`; prints {"access_key": …, "secret_key": …}
    s3_bucket.py ENDPOINT list KEY SECRET       prints {"key": size, …} for the bucket `docs`
    s3_bucket.py ENDPOINT put KEY SECRET NAME   stores stdin under NAME in `docs`

The moto server must run with INITIAL_NO_AUTH_ACTION_COUNT=4: the four IAM calls of `setup` run before
authentication applies; every later request must carry a valid AWS Signature Version 4.
"""

import json
import sys

import boto3

REGION = "eu-west-3"


def client(endpoint, service, key, secret):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=key, aws_secret_access_key=secret)


def main():
    endpoint, command = sys.argv[1], sys.argv[2]
    if command == "setup":
        iam = client(endpoint, "iam", "initial", "initial")
        iam.create_user(UserName="socle")
        policy = iam.create_policy(PolicyName="socle-documents", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        iam.attach_user_policy(UserName="socle", PolicyArn=policy["Policy"]["Arn"])
        key = iam.create_access_key(UserName="socle")["AccessKey"]
        s3 = client(endpoint, "s3", key["AccessKeyId"], key["SecretAccessKey"])
        s3.create_bucket(Bucket="docs", CreateBucketConfiguration={"LocationConstraint": REGION})
        print(json.dumps({"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}))
        return
    s3 = client(endpoint, "s3", sys.argv[3], sys.argv[4])
    if command == "list":
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="docs"):
            for o in page.get("Contents", []):
                out[o["Key"]] = o["Size"]
        print(json.dumps(out))
    elif command == "put":
        s3.put_object(Bucket="docs", Key=sys.argv[5], Body=sys.stdin.buffer.read())
    else:
        sys.exit(f"commande inconnue : {command}")


if __name__ == "__main__":
    main()
