"""A real S3-compatible server for tests: moto's server mode (``ThreadedMotoServer``, a Werkzeug
HTTP server in a thread) on 127.0.0.1 with a free port, not a mock of our code. Our code talks
to it through pyarrow's S3 client with the standard AWS variables, ``AWS_ENDPOINT_URL`` among
them, exactly as it would talk to AWS, MinIO or Ceph.

The ``s3_bucket`` fixture (``tests/conftest.py``) starts one per session and yields the URI of
a fresh bucket per test.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The standard variables the AWS SDK (and so pyarrow's S3FileSystem and boto3) reads.
# AWS_EC2_METADATA_DISABLED: no instance-metadata lookups (seconds of timeouts off EC2).
def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "voxray-test",
        "AWS_SECRET_ACCESS_KEY": "voxray-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def s3_server() -> Iterator[str]:
    """Start moto's S3 server, export the AWS variables pointing at it, yield its endpoint;
    stop it and restore the environment afterwards."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = aws_env(endpoint)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def new_bucket(endpoint: str) -> str:
    """Create a bucket with a unique name on the server; its ``s3://`` URI."""
    import boto3

    name = f"voxray-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"
