"""Ray Serve app for bench/batching.py: the stand-in model behind `@serve.batch`.

    RAY_USAGE_STATS_ENABLED=0 <ray venv>/bin/python bench/apps/ray_batching.py PORT

Starts a local Ray (its dashboard off, everything on 127.0.0.1), serves `POST /infer {"x": 1}` ->
`{"result": 2}` and `GET /stats` (calls and inputs the batched method saw) on 127.0.0.1:PORT, prints
`READY` and serves until SIGTERM or SIGINT.
"""

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # standin.py, without the repository's packages
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray takes this machine's outward address as the node's unless cluster mode is off (that is the variable
# that turns it off, whatever its name says); off, every Ray process talks over 127.0.0.1
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
from ray import serve
from standin import infer

HOST = "127.0.0.1"
# no line per request, as the fasttask servers of the benchmark run at --log-level warning
QUIET = {"enable_access_log": False, "log_level": "WARNING"}


@serve.deployment(max_ongoing_requests=1000, logging_config=QUIET)  # the default (5) would cap batches at 5
class Model:
    def __init__(self) -> None:
        self.calls = 0
        self.inputs = 0

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def infer(self, xs: list[int]) -> list[int]:
        self.calls += 1
        self.inputs += len(xs)
        # the model call on a thread, so the replica's event loop keeps taking requests meanwhile
        return await asyncio.get_running_loop().run_in_executor(None, infer, xs)

    async def __call__(self, request: Any) -> dict[str, Any]:
        if request.url.path.endswith("/stats"):
            return {"calls": self.calls, "inputs": self.inputs}
        body = await request.json()
        return {"result": await self.infer(int(body["x"]))}


def main() -> None:
    port = int(sys.argv[1])
    ray.init(
        include_dashboard=False,
        _node_ip_address=HOST,
        num_cpus=os.cpu_count() or 2,
        log_to_driver=False,
        configure_logging=False,
    )
    serve.start(http_options={"host": HOST, "port": port}, logging_config=QUIET)
    serve.run(Model.bind(), route_prefix="/", blocking=False)
    print("READY", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
