"""Celery side of bench/distributed.py: one no-op task. Needs the venv bench/.venv-celery
(`pip install celery[redis]`).

Broker and result backend come from BENCH_CELERY_BROKER and BENCH_CELERY_BACKEND (both Redis URLs;
the benchmark uses db 0 for the broker and db 1 for results, so that db 1's size counts finished jobs).

    bench/.venv-celery/bin/celery -A bench.apps.celery_noop worker --pool prefork --concurrency 2
"""

import os

from celery import Celery

app = Celery(
    "bench_noop",
    broker=os.environ["BENCH_CELERY_BROKER"],
    backend=os.environ["BENCH_CELERY_BACKEND"],
)


@app.task(name="bench.noop")
def noop() -> str:
    return "ok"
