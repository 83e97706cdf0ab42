"""Test helper: a real S3-compatible server on 127.0.0.1 (moto's server mode, in a thread of the
test process), with the AWS_* environment pointing this process and its subprocesses at it, as a
user of an S3-compatible store (MinIO, Ceph) would set it. Used by tests/ray/test_s3.py and the
loopback cluster test."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

BUCKET = "raydiff-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3:
    url: str  # http://127.0.0.1:PORT
    port: int
    env: dict[str, str]
    client: object  # boto3's, to look at the bucket behind raydiff's back
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) the server served
    server: object = None  # moto's ThreadedMotoServer

    def stop(self) -> None:
        """The store stops answering (its port closed); what it holds stays, as a restarted
        MinIO's disk would."""
        self.server.stop()
        self.server = None

    def restart(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def keys(self, prefix: str = "") -> list[str]:
        out, token = [], None
        while True:
            kw = {"Bucket": BUCKET, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.client.list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def served_since(self, mark: int, path_prefix: str = f"/{BUCKET}") -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.requests[mark:] if p.startswith(path_prefix)]


class _RequestLog(logging.Handler):
    """werkzeug's access log ('"PUT /bucket/key HTTP/1.1" 200 -') as (method, path) pairs."""

    LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/')

    def __init__(self, into: list):
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        m = self.LINE.search(record.getMessage())
        if m:
            self.into.append((m.group(1), m.group(2).split("?", 1)[0]))


def _complete_multipart_as_s3_names_it(mp: pytest.MonkeyPatch) -> None:
    """moto 5.2 names the CompleteMultipartUpload answer's root element
    <CompleteMultipartUploadResponse>; S3 names it <CompleteMultipartUploadResult>, and the AWS
    C++ SDK under pyarrow takes any other root for an error embedded in a 200 response (it retries,
    then fails the upload). Ray Tune uploads its checkpoints and experiment state as multipart
    uploads, so the server is given S3's name. (raydiff's own files are single PUTs.)"""
    from moto.core import serialize

    original = serialize.S3Serializer._serialized_result_to_response

    def named_as_s3(self, resp, result, shape, serialized_result):
        resp = original(self, resp, result, shape, serialized_result)
        if self.operation_model.name == "CompleteMultipartUpload" and isinstance(resp.get("body"), str):
            resp["body"] = resp["body"].replace("CompleteMultipartUploadResponse", "CompleteMultipartUploadResult")
        return resp

    mp.setattr(serialize.S3Serializer, "_serialized_result_to_response", named_as_s3)


@contextlib.contextmanager
def s3_server(bucket: str = BUCKET) -> Iterator[S3]:
    """A moto S3 server on 127.0.0.1 with one bucket; the environment points this process and its
    subprocesses (the CLI, Ray's workers) at it, as a user of an S3-compatible store would."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    with pytest.MonkeyPatch.context() as mp:
        _complete_multipart_as_s3_names_it(mp)
        log = logging.getLogger("werkzeug")  # the server's access log: one record per request
        served: list[tuple[str, str]] = []
        handler = _RequestLog(served)
        mp.setattr(log, "propagate", False)  # thousands of lines: not into pytest's captured log
        mp.setattr(log, "level", logging.INFO)
        log.addHandler(handler)
        port = _free_port()
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        store = S3("", port, {}, None, served, server)
        try:
            url = f"http://127.0.0.1:{port}"
            env = {
                "AWS_ENDPOINT_URL": url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
            }
            for k in [k for k in os.environ if k.startswith("AWS_")]:  # no profile, token, other endpoint
                mp.delenv(k)
            mp.delenv("RAYDIFF_STORAGE", raising=False)
            for k, v in env.items():
                mp.setenv(k, v)
            client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
            client.create_bucket(Bucket=bucket)
            store = S3(url, port, env, client, served, server)
            yield store
        finally:
            if store.server is not None:
                store.server.stop()
            log.removeHandler(handler)
