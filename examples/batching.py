"""Batching across jobs: many queued jobs, one model call.

    fasttask serve examples.batching:app
    curl -X POST localhost:8000/embed -H 'content-type: application/json' -d '{"text": "hello"}'

Each request is one job with its own id, progress, result and error; up to 32 waiting jobs run as one call
of `embed`, which gets the batch's values as lists and returns one entry per job.
"""

from __future__ import annotations

import hashlib
import threading
import time

from fasttask import Batch, FastTaskAPI, JobProgress

app = FastTaskAPI(title="batching")


class StandInModel:
    """Stands in for a model on a GPU: a call costs 20 ms plus 1 ms per input, one call at a time (a lock, as
    one device), and the time is spent sleeping, as a GPU's is spent outside the GIL."""

    def __init__(self) -> None:
        self._device = threading.Lock()

    def embed(self, texts: list[str], dims: int) -> list[list[float]]:
        with self._device:
            time.sleep(0.020 + 0.001 * len(texts))
        return [[byte / 255 for byte in hashlib.sha256(text.encode()).digest()[:dims]] for text in texts]


models: dict[str, StandInModel] = {}


@app.setup
def load_model() -> None:  # once per process that runs jobs
    models["embedder"] = StandInModel()


@app.task_endpoint("/embed", queue_size=1000, batch=Batch(max_size=32, max_wait_ms=10))
def embed(job_progress: JobProgress, text: list[str], dims: list[int] = 8) -> list[list[float] | Exception]:
    """`text` and `dims` hold one value per job, in the same order; so does the returned list."""
    job_progress.set_status(0.1, f"embedding {len(text)} texts")  # reaches every job of the batch
    good = [i for i, t in enumerate(text) if t.strip() and 1 <= dims[i] <= 32]
    vectors = models["embedder"].embed([text[i] for i in good], max((dims[i] for i in good), default=1))
    results: list[list[float] | Exception] = [ValueError("text must not be empty, dims 1 to 32")] * len(text)
    for i, vector in zip(good, vectors, strict=True):
        results[i] = vector[: dims[i]]  # an Exception entry fails only its own job
    return results


if __name__ == "__main__":
    app.start()
