"""Peer side of the benchmark: the same no-op task endpoint on fast-task-api 1.2.9.

Run with the peer venv:  bench/.venv-peer/bin/python bench/apps/peer_noop.py [PORT]
The port comes from argv[1], else FTAPI_PORT, else 8000. The host is 127.0.0.1
unless FTAPI_HOST says otherwise (fast-task-api itself defaults to 0.0.0.0, which
this benchmark must never bind).

By default it starts exactly as its users do, `app.start(...)`, which runs uvicorn with
its default access log (one line per request on stdout). BENCH_PEER_ACCESS_LOG=0 does
what app.start() does but with uvicorn's access log off, to see what that log costs.
"""

import os
import sys

from fast_task_api import FastTaskAPI

app = FastTaskAPI()


@app.task_endpoint("/noop", queue_size=100000)
def noop() -> str:
    return "ok"


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("FTAPI_PORT", "8000"))
    host = os.environ.get("FTAPI_HOST", "127.0.0.1")
    if os.environ.get("BENCH_PEER_ACCESS_LOG", "1") == "0":
        import uvicorn

        app.app.include_router(app)  # what app.start() does before uvicorn.run
        uvicorn.run(app.app, host=host, port=port, access_log=False)
    else:
        app.start(port=port, host=host)
