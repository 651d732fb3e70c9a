"""fasttask app for the many-workers run of bench/distributed.py: a task that sleeps 100 ms.

    FTAPI_REDIS_URL=redis://127.0.0.1:P/0 python -m fasttask serve bench.apps.fasttask_sleep:app --port N
    FTAPI_REDIS_URL=redis://127.0.0.1:P/0 python -m fasttask worker bench.apps.fasttask_sleep:app

(run from the repository root so `bench` is importable). A separate module from fasttask_noop so the
no-op workers watch one queue only.
"""

import time

from fasttask import FastTaskAPI

app = FastTaskAPI(title="bench-sleep")


@app.task_endpoint("/sleep100", queue_size=100000)
def sleep100() -> str:
    time.sleep(0.1)
    return "ok"
