"""Fries with progress: a task that reports how far it got, and a plain endpoint."""

import time

from fasttask import FastTaskAPI, JobProgress

app = FastTaskAPI(title="fries")


@app.task_endpoint("/make_fries", queue_size=100, timeout=60)
def make_fries(job_progress: JobProgress, fries_name: str, amount: int = 1) -> str:
    """Fry some fries, reporting progress on the way."""
    for step in range(1, 5):
        time.sleep(0.25)
        job_progress.set_status(step / 4, f"frying batch {step} of 4")
    return f"{amount} x {fries_name}, golden"


@app.endpoint("/ping", methods=["GET"])
def ping() -> dict[str, str]:
    return {"pong": "ok"}


if __name__ == "__main__":
    app.start()
