"""The stand-in model of bench/batching.py, shared by the fasttask app and the Ray Serve app.

A call costs 20 ms plus 1 ms per input, as a GPU whose batch of 32 costs little more than one input. It
sleeps, so it releases the GIL as GPU work does, and a lock lets one call run at a time per process, as one
GPU does: without it a sleeping stand-in would gain from parallel calls that a real GPU would not give.
"""

import threading
import time

CALL_S = 0.020
PER_INPUT_S = 0.001

_device = threading.Lock()


def infer(xs: list[int]) -> list[int]:
    with _device:
        time.sleep(CALL_S + PER_INPUT_S * len(xs))
    return [2 * x for x in xs]
