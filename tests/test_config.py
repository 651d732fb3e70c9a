"""Bad configuration stops the process at start and names the variable; `fasttask --version`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fasttask import ConfigError, Settings, __version__
from tests.support import ROOT

BLOCKER = textwrap.dedent(
    """
    import sys

    class NotInstalled:
        '''Behaves as if these packages were not installed.'''

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    """
)


def block_imports(directory: Path, *packages: str) -> None:
    """A sitecustomize in `directory` (put on PYTHONPATH) that makes importing `packages` fail."""
    (directory / "sitecustomize.py").write_text(f"BLOCKED = {packages!r}\n{BLOCKER}")


def fasttask(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FTAPI_")}
    return subprocess.run(
        [sys.executable, "-m", "fasttask", *args],
        cwd=cwd,
        env={**environment, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_redis_queue_without_the_redis_extra_refuses_to_start(command: str, tmp_path: Path) -> None:
    block_imports(tmp_path, "redis", "rq")
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "examples")]),
        "FTAPI_REDIS_URL": "redis://127.0.0.1:1/0",  # never reached: the process stops before
    }
    check = subprocess.run(
        [sys.executable, "-c", "import redis"], env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    assert check.returncode == 1 and "No module named 'redis'" in check.stderr  # the blocker works
    run = fasttask(command, "fries:app", cwd=tmp_path, env=env)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "FTAPI_REDIS_URL" in run.stderr and "pip install 'fasttask[redis]'" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_storage_without_the_s3_extra_refuses_to_start(tmp_path: Path, redis_url: str) -> None:
    block_imports(tmp_path, "boto3", "botocore")
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "examples")]),
        "FTAPI_REDIS_URL": redis_url,
        "FTAPI_S3_BUCKET": "never-reached",
    }
    run = fasttask("serve", "fries:app", cwd=tmp_path, env=env)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr == "fasttask: FTAPI_S3_BUCKET needs boto3: pip install 'fasttask[s3]'\n"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("FTAPI_DEBUG", "ture", "is not a yes/no value"),
        ("FTAPI_METRICS", "nope", "is not a yes/no value"),
        ("FTAPI_ALLOW_PRIVATE_URLS", "2", "is not a yes/no value"),
        ("FTAPI_CONCURRENCY", "abc", "is not a whole number"),
        ("FTAPI_CONCURRENCY", "2.5", "is not a whole number"),
        ("FTAPI_CONCURRENCY", "0", "at least 1"),
        ("FTAPI_PORT", "70000", "port number"),
        ("FTAPI_MAX_FILE_MB", "nan", "finite"),
        ("FTAPI_WORKER_GRACE_S", "-1", "at least 0"),
        ("FTAPI_S3_INLINE_KB", "inf", "finite"),
        ("FTAPI_LOG_FORMAT", "yaml", "'text' or 'json'"),
    ],
)
def test_bad_values_are_errors_that_name_the_variable(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({variable: value})
    assert variable in error.value.detail and says in error.value.detail


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("TRUE", True), ("on", True), ("yes", True), ("0", False), ("Off", False)]
)
def test_yes_no_values(value: str, expected: bool) -> None:
    assert Settings.from_env({"FTAPI_DEBUG": value}).debug is expected


def test_a_bad_value_stops_fasttask_serve_with_its_name(tmp_path: Path) -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "examples")]), "FTAPI_DEBUG": "ture"}
    run = fasttask("serve", "fries:app", cwd=tmp_path, env=env)
    assert run.returncode == 2
    assert run.stderr == (
        "fasttask: FTAPI_DEBUG='ture' is not a yes/no value: use 1, true, yes, on or 0, false, no, off\n"
    )


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("nosuch:app", "cannot load nosuch:app: no module named 'nosuch'"),
        ("nosuch.inner:app", "cannot load nosuch.inner:app: no module named 'nosuch'"),
        ("fries:nope", "cannot load fries:nope: module 'fries' has no attribute 'nope'"),
        ("fries:FastTaskAPI", "fries:FastTaskAPI is not a FastTaskAPI (found type)"),
    ],
)
def test_serve_says_what_was_not_found_without_a_traceback(target: str, says: str, tmp_path: Path) -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "examples")])}
    for command in ("serve", "worker"):
        run = fasttask(command, target, cwd=tmp_path, env={**env, "FTAPI_REDIS_URL": "redis://127.0.0.1:1/0"})
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith(f"fasttask: {says}"), run.stderr
        assert "Traceback" not in run.stderr


def test_a_missing_import_inside_the_app_keeps_its_traceback(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import not_installed_anywhere\n")
    run = fasttask("serve", "broken:app", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert run.returncode == 1
    assert "Traceback" in run.stderr and "broken.py" in run.stderr
    assert "No module named 'not_installed_anywhere'" in run.stderr


def test_version(tmp_path: Path) -> None:
    run = fasttask("--version", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert (run.returncode, run.stdout) == (0, f"fasttask {__version__}\n")
