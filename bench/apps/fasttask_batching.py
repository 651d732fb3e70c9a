"""fasttask app for bench/batching.py: one stand-in model behind an unbatched and a batched endpoint.

    python -m fasttask serve bench.apps.fasttask_batching:app --host 127.0.0.1 --port N

(run from the repository root so `bench` is importable). The model is `bench.apps.standin.infer`.
"""

from bench.apps.standin import infer
from fasttask import Batch, FastTaskAPI

app = FastTaskAPI(title="bench-batching")


@app.task_endpoint("/infer", queue_size=100000)
def infer_one(x: int) -> int:
    return infer([x])[0]


@app.task_endpoint("/infer_batch", queue_size=100000, batch=Batch(max_size=32, max_wait_ms=10))
def infer_batch(x: list[int]) -> list[int]:
    return infer(x)
