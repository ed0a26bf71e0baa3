"""A real S3 API server for the object-storage tests: ``moto``'s server mode, on loopback.

CI starts one (``.ci/run``) and exports ``ADAPTERHUB_TEST_S3_ENDPOINT``; without it a test session
starts its own (moto is a test dependency), so the tests never silently test less. Each test gets
a fresh bucket and the ``AWS_*`` variables that obstore reads, exactly as a deployment sets them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

S3_ENV = "ADAPTERHUB_TEST_S3_ENDPOINT"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """Start ``moto_server`` on a free loopback port; yield its endpoint; stop it."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def s3_client(endpoint: str) -> Any:
    """A boto3 client of the server (the tests' independent view of the bucket)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


def bucket_of(url: str) -> str:
    """The bucket of ``s3://bucket/prefix``."""
    return url.removeprefix("s3://").split("/")[0]


def bucket_keys(endpoint: str, url: str) -> list[str]:
    """Every key in the bucket of ``url``, sorted (seen through boto3, not the store under test)."""
    found = s3_client(endpoint).list_objects_v2(Bucket=bucket_of(url)).get("Contents", [])
    return sorted(o["Key"] for o in found)


def s3_env(monkeypatch: Any, endpoint: str) -> str:
    """Create a fresh bucket, point obstore at the server; return ``s3://bucket/blobs``."""
    bucket = f"adapterhub-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}.items():
        monkeypatch.setenv(key, value)
    return f"s3://{bucket}/blobs"


def endpoint_from_env() -> str | None:
    """The CI server's endpoint, if CI started one."""
    endpoint = os.environ.get(S3_ENV)
    if not endpoint and os.environ.get("CI"):
        pytest.fail(f"{S3_ENV} is not set but CI is: .ci/run starts an S3 server for these tests", pytrace=False)
    return endpoint or None
