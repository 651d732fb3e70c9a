"""The Redis queue's package from the outside: loaded only when used, and the old names still resolve."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rq.utils import import_attribute

from fasttask.redis import keys


def test_an_api_on_the_embedded_queue_never_loads_redis_or_rq() -> None:
    script = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from fasttask import FastTaskAPI\n"
        "app = FastTaskAPI(queue='local')\n"
        "@app.task_endpoint('/x')\n"
        "def x(text: str) -> str: return text\n"
        "with TestClient(app) as client:\n"
        "    submitted = client.post('/x', json={'text': 'a'}).json()\n"
        "    job = client.get(f\"/jobs/{submitted['id']}\", params={'wait': 10}).json()\n"
        "assert job['status'] == 'finished', job\n"
        "loaded = sorted(name for name in ('redis', 'rq', 'fasttask.redis') if name in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_jobs_stored_by_earlier_versions_still_name_an_importable_function() -> None:
    execute = import_attribute(keys.TASK_FUNCTION)  # how RQ resolves a job's func_name
    with pytest.raises(RuntimeError, match="run `fasttask worker MODULE:APP`"):
        execute("/x", text="a")
    from fasttask.worker import Worker, run_worker_process

    assert callable(Worker) and callable(run_worker_process)
