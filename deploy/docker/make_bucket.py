#!/usr/bin/env python3
"""Makes fasttask's bucket on an S3-compatible store, waiting for the store to answer; exits 0 when it exists.

Installed in the image as `fasttask-make-bucket` (needs the `s3` extra): the compose stack runs it once before
the API and workers start. It reads what fasttask reads: FTAPI_S3_BUCKET, FTAPI_S3_ENDPOINT_URL and boto3's
standard credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION). MAKE_BUCKET_WAIT_S bounds
the wait for the store (default 120 s).
"""

from __future__ import annotations

import os
import sys
import time

import boto3  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

MISSING = {"404", "NoSuchBucket", "NotFound"}


def make_bucket(bucket: str, endpoint_url: str | None, wait_s: float) -> str:
    """'exists' or 'created'; raises SystemExit with the last error when the store never answered."""
    client = boto3.client("s3", endpoint_url=endpoint_url or None)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.head_bucket(Bucket=bucket)
            return "exists"
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in MISSING:
                raise SystemExit(f"fasttask-make-bucket: {bucket}: {exc}") from exc
            client.create_bucket(Bucket=bucket)
            return "created"
        except BotoCoreError as exc:  # the store is not up (yet)
            if time.monotonic() >= deadline:
                raise SystemExit(f"fasttask-make-bucket: no S3 store at {endpoint_url}: {exc}") from exc
            time.sleep(1)


def main() -> int:
    bucket = os.environ.get("FTAPI_S3_BUCKET", "")
    if not bucket:
        print("fasttask-make-bucket: set FTAPI_S3_BUCKET", file=sys.stderr)
        return 2
    endpoint = os.environ.get("FTAPI_S3_ENDPOINT_URL")
    outcome = make_bucket(bucket, endpoint, float(os.environ.get("MAKE_BUCKET_WAIT_S", "120")))
    print(f"fasttask-make-bucket: bucket {bucket} {outcome} at {endpoint or 'AWS S3'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
