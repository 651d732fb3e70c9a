"""Logs: no secret on any line at any level (a real botocore debug log against moto's S3 server included), and
a failed job's reason logged by the process that ran it, in text and JSON."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI, Settings
from fasttask.logs import MASK, JsonFormatter, MaskingFormatter, Redactor, formatter, log_job_error
from tests.support import ROOT
from tests.support.apps import make_app
from tests.support.observability_app import build
from tests.support.servers import free_port


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def new_secret(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def logged(record_formatter: logging.Formatter, emit: Callable[[logging.Logger], None]) -> str:
    """What one handler with `record_formatter` writes for the records `emit` logs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(record_formatter)
    logger = logging.getLogger(f"tests.logs.{os.urandom(4).hex()}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    emit(logger)
    return stream.getvalue()


# -- masking --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["text", "json"])
def test_secrets_are_masked_whatever_the_record_holds(kind: str) -> None:
    secret = new_secret("Sk/+=")
    Redactor.add_secrets([secret])

    class Holder:
        def __repr__(self) -> str:
            return f"Holder(token={secret})"

    def emit(logger: logging.Logger) -> None:
        logger.debug("bytes %s", secret.encode())
        logger.debug("a dict %s", {"headers": {"X-Token": secret.encode()}})
        logger.debug("an object %r and a number %d", Holder(), 7)
        logger.debug("mapping %(value)s", {"value": [secret]})
        logger.info("extra", extra={"endpoint": f"/x/{secret}", "job_id": secret})
        try:
            raise RuntimeError(f"failed with {secret!r}")
        except RuntimeError:
            logger.exception("an error")
        logger.warning("stack", stack_info=True, extra={"job_id": secret})

    record_formatter = JsonFormatter() if kind == "json" else formatter(Settings(log_format="text"))
    out = logged(record_formatter, emit)
    assert secret not in out
    assert json.dumps(secret)[1:-1] not in out
    assert out.count(MASK) >= (8 if kind == "json" else 5)
    if kind == "json":
        lines = [json.loads(line) for line in out.splitlines()]
        assert len(lines) == 7
        assert lines[4]["endpoint"] == f"/x/{MASK}" and lines[4]["job_id"] == MASK
        assert "Traceback" in lines[5]["exception"] and MASK in lines[5]["exception"]


def test_short_secrets_leave_ordinary_words_alone_but_not_the_places_secrets_travel() -> None:
    Redactor.add_secrets(["test", "admin"])  # shorter than MIN_SECRET_CHARS: ordinary words
    out = logged(
        MaskingFormatter(),
        lambda log: [
            log.info("the test suite ran as administrator"),
            log.info("GET /jobs?api_key=test&x=1"),
            log.info("headers {'X-Amz-Security-Token': b'test', 'Authorization': b'Bearer test'}"),
            log.info("x-api-key: test"),
            log.info("connecting to redis://default:admin@127.0.0.1:6379/0"),
            log.info("Credential=test/20261205/us-east-1/s3/aws4_request"),
        ],
    ).splitlines()
    assert out[0] == "the test suite ran as administrator"
    assert out[1] == f"GET /jobs?api_key={MASK}&x=1"
    assert out[2] == f"headers {{'X-Amz-Security-Token': b'{MASK}', 'Authorization': b'{MASK}'}}"
    assert out[3] == f"x-api-key: {MASK}"
    assert out[4] == f"connecting to redis://default:{MASK}@127.0.0.1:6379/0"
    assert out[5] == f"Credential={MASK}/20261205/us-east-1/s3/aws4_request"


BOTOCORE_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from fasttask import Settings
    from fasttask.logs import configure_worker_logging
    from fasttask.storage import ObjectStore

    settings = Settings.from_env()
    configure_worker_logging(settings, "debug")
    store = ObjectStore(settings)
    store.client.create_bucket(Bucket=settings.s3_bucket)
    store.client.put_object(Bucket=settings.s3_bucket, Key="k", Body=b"x")
    url = store.client.generate_presigned_url("get_object", Params={"Bucket": settings.s3_bucket, "Key": "k"})
    logging.getLogger("fasttask.test").debug("presigned %s", url)
    """
)


@pytest.mark.parametrize("kind", ["text", "json"])
def test_a_botocore_debug_log_against_s3_holds_no_credential(kind: str, s3_endpoint: str, tmp_path: Path) -> None:
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIA" + os.urandom(8).hex().upper(),
        "AWS_SECRET_ACCESS_KEY": new_secret("sk+/"),
        "AWS_SESSION_TOKEN": new_secret("tok/+=") * 4,
        "FTAPI_API_KEY": new_secret("key-"),
    }
    env = {
        **os.environ,
        **secrets,
        "AWS_DEFAULT_REGION": "us-east-1",
        "FTAPI_S3_BUCKET": f"logs-{os.urandom(4).hex()}",
        "FTAPI_S3_ENDPOINT_URL": s3_endpoint,
        "FTAPI_LOG_FORMAT": kind,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("FTAPI_REDIS_URL", None)
    run = subprocess.run(
        [sys.executable, "-c", BOTOCORE_SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert "botocore" in log and "X-Amz-Security-Token" in log and "presigned" in log  # the lines are there
    for name, secret in secrets.items():
        assert secret not in log, name
        assert secret.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D") not in log, name
    if kind == "json":
        assert all(json.loads(line) for line in run.stdout.splitlines())


def test_a_worker_at_debug_level_with_storage_logs_no_credential(
    redis_url: str,
    s3_endpoint: str,
    client_for: Callable[[FastTaskAPI], TestClient],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`fasttask worker --log-level debug` moving a file through the bucket: botocore logs every request."""
    import boto3

    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIA" + os.urandom(8).hex().upper(),
        "AWS_SECRET_ACCESS_KEY": new_secret("sk+/"),
        "AWS_SESSION_TOKEN": new_secret("tok/+=") * 4,
    }
    for name, value in {**secrets, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    bucket = f"logs-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    storage = {"s3_bucket": bucket, "s3_endpoint_url": s3_endpoint, "s3_inline_kb": 1}
    client = client_for(make_app(queue="redis", redis_url=redis_url, **storage))
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "FTAPI_REDIS_URL": redis_url,
        "FTAPI_S3_BUCKET": bucket,
        "FTAPI_S3_ENDPOINT_URL": s3_endpoint,
        "FTAPI_S3_INLINE_KB": "1",
        "PYTHONPATH": str(ROOT),
    }
    app = "tests.support.cluster_app:app"
    command = ["fasttask", "worker", app, "--endpoints", "/echo_file", "--log-level", "debug"]
    with log.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", *command], env=env, cwd=ROOT, stdout=out, stderr=out)
    try:
        content = os.urandom(50_000)
        job = client.post("/echo_file", files={"file": ("big.bin", content, "application/x-test")}).json()
        final = client.get(f"/jobs/{job['id']}", params={"wait": 30}).json()
        assert final["status"] == "finished", final
        assert client.get(final["result"]["url"]).content == content
    finally:
        worker.terminate()
        worker.wait(15)
    text = log.read_text()
    # botocore's request lines are there, with the credentials' places masked
    assert "botocore.endpoint Sending http request" in text
    assert f"'X-Amz-Security-Token': b'{MASK}'" in text and f"'Authorization': b'{MASK}'" in text
    for name, secret in secrets.items():
        assert secret not in text, name
        assert secret.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D") not in text, name


# -- a failed job says why --------------------------------------------------------------------------------------
def failure_lines(log: str, job_id: str, kind: str) -> str:
    if kind == "text":
        return "\n".join(block for block in log.split("\n20") if job_id in block and "ERROR" in block)
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    failed = [e for e in entries if e.get("job_id") == job_id and e["level"] == "error"]
    assert len(failed) == 1, entries
    entry = failed[0]
    assert entry["error_type"] == "ValueError" and entry["logger"] == "fasttask.jobs"
    return f"{entry['message']}\n{entry['exception']}"


def assert_reason(text: str, job_id: str, message: str) -> None:
    assert job_id in text, text
    assert f"ValueError: {message}" in text, text
    assert "Traceback (most recent call last)" in text and "raise ValueError(message)" in text, text


@pytest.fixture
def serve_subprocess(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], tuple[str, Path]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(extra_env: dict[str, str]) -> tuple[str, Path]:
        port = free_port()
        log = tmp_path / f"serve-{port}.log"
        env = {**os.environ, "FTAPI_QUEUE": "local", "PYTHONPATH": str(ROOT), **extra_env}
        env.pop("FTAPI_REDIS_URL", None)
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "fasttask", "serve", "tests.support.observability_app:app", "--port", str(port)],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, 30, "the API process")
        return url, log

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("kind", ["text", "json"])
def test_the_embedded_queue_logs_why_a_job_failed(
    kind: str, serve_subprocess: Callable[[dict[str, str]], tuple[str, Path]]
) -> None:
    url, log = serve_subprocess({"FTAPI_LOG_FORMAT": kind})
    message = new_secret("kaboom-")
    job = httpx.post(f"{url}/fail", json={"message": message}).json()
    final = httpx.get(f"{url}/jobs/{job['id']}", params={"wait": 20}).json()
    assert final["status"] == "failed" and "traceback" not in final["error"]
    text = wait_for(lambda: failure_lines(log.read_text(), job["id"], kind), 10, "the failure's log line")
    assert_reason(text, job["id"], message)


@pytest.mark.parametrize("kind", ["text", "json"])
def test_a_redis_worker_logs_why_a_job_failed(
    kind: str, redis_url: str, client_for: Callable[[FastTaskAPI], TestClient], tmp_path: Path
) -> None:
    client = client_for(build(queue="redis", redis_url=redis_url))
    log = tmp_path / "worker.log"
    env = {**os.environ, "FTAPI_REDIS_URL": redis_url, "FTAPI_LOG_FORMAT": kind, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "fasttask", "worker", "tests.support.observability_app:app", "--grace", "1"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        message = new_secret("kaboom-")
        job = client.post("/fail", json={"message": message}).json()
        final = client.get(f"/jobs/{job['id']}", params={"wait": 30}).json()
        assert final["status"] == "failed", final
        text = wait_for(lambda: failure_lines(log.read_text(), job["id"], kind), 10, "the failure's log line")
        assert_reason(text, job["id"], message)
    finally:
        worker.terminate()
        worker.wait(15)


def test_log_job_error_carries_the_job_fields(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        error = exc
    with caplog.at_level(logging.ERROR, "fasttask.jobs"):
        log_job_error("job-9", "/x", error, retrying=True)
    (record,) = caplog.records
    assert (record.job_id, record.endpoint, record.error_type) == ("job-9", "/x", "KeyError")  # type: ignore[attr-defined]
    assert record.exc_info is not None and record.exc_info[1] is error
    assert record.getMessage() == "job job-9 /x failed; it runs again: KeyError: 'missing'"
