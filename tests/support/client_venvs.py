"""Released clients the tests run unchanged, each in a virtualenv of its own (their dependencies are not
fasttask's): made once with pip, kept in a cache directory and reused by later runs.

The cache is `FASTTASK_TEST_VENVS`, else `~/.cache/fasttask-tests`. A client that cannot be installed (no
package index reachable) skips its tests with the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import venv
from pathlib import Path
from typing import Any

import pytest

DRIVER = Path(__file__).with_name("fastsdk_driver.py")


def cache_dir() -> Path:
    configured = os.environ.get("FASTTASK_TEST_VENVS")
    return Path(configured) if configured else Path.home() / ".cache" / "fasttask-tests"


def client_python(requirement: str) -> Path:
    """The interpreter of a virtualenv holding `requirement` (`fastsdk==0.4.26`), made on first use."""
    home = cache_dir() / requirement.replace("==", "-")
    python = home / "bin" / "python"
    ready = home / ".installed"
    home.parent.mkdir(parents=True, exist_ok=True)
    # one maker at a time when test runs overlap; the others wait and reuse it
    with open(home.parent / f".{home.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            venv.EnvBuilder(clear=True, with_pip=True).create(home)
            install = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement],
                capture_output=True,
                text=True,
            )
            if install.returncode != 0:
                pytest.skip(f"{requirement} could not be installed: {install.stderr.strip()[-500:]}")
            ready.write_text(requirement)
    return python


def run_driver(python: Path, base_url: str, scenario: str, tmp_path: Path, **args: Any) -> dict[str, Any]:
    """Run one scenario of `fastsdk_driver.py` against `base_url`: its report."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),  # the client's registry and caches land here, not in the user's home
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    run = subprocess.run(
        [str(python), str(DRIVER), base_url, scenario, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, f"driver failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    lines = [line for line in run.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, f"no report from the driver:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("REPORT "))
    return report
