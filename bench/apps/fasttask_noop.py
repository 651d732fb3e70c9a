"""fasttask side of the benchmark: one no-op task endpoint.

Served by `python -m fasttask serve bench.apps.fasttask_noop:app --port P`
(run from the repository root so `bench` is importable).
"""

from fasttask import FastTaskAPI

app = FastTaskAPI(title="bench-noop")


@app.task_endpoint("/noop", queue_size=100000)
def noop() -> str:
    return "ok"
