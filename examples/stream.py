"""A generator task: each yield is streamed to clients as an `output` event."""

import asyncio
from collections.abc import AsyncIterator

from fasttask import FastTaskAPI, JobProgress

app = FastTaskAPI(title="streaming")


@app.task_endpoint("/count_down", queue_size=20, timeout=120)
async def count_down(job_progress: JobProgress, start: int = 5) -> AsyncIterator[str]:
    """Yield one line per second; the job's result is the list of all of them."""
    for remaining in range(start, 0, -1):
        job_progress.set_status(1 - remaining / start, f"{remaining} to go")
        yield f"{remaining}..."
        await asyncio.sleep(1)
    yield "lift-off"


if __name__ == "__main__":
    app.start()
