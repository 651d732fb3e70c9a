#!/usr/bin/env python3
"""Keeps a worker pod's deletion cost in step with its worker, so that scaling down removes idle workers first.

Runs as a small second container of each worker pod (deploy/k8s), installed in the image as
`fasttask-pod-deletion-cost`. Every POLL_S it reads the state that the pod's fasttask worker keeps on its RQ
record in Redis (`busy` while a job is in hand) and sets the pod's `controller.kubernetes.io/pod-deletion-cost`
annotation: BUSY_COST as soon as a worker of the pod is busy, IDLE_COST once it has been idle IDLE_AFTER_S.
When a Deployment shrinks, its ReplicaSet deletes the pods with the lowest cost first.

It patches only on a change, and holds the busy cost through short gaps between jobs, because every patch is a
write to the Kubernetes API. It needs `get` and `patch` on pods (a Role bound to the pod's service account) and
the service account token, which the manifests mount into this container only, not into the worker's.

Environment: POD_NAME and POD_NAMESPACE (the downward API), FTAPI_REDIS_URL; optionally DELETION_COST_POLL_S,
DELETION_COST_IDLE_AFTER_S, KUBERNETES_API_URL (default: the in-cluster API server) and SERVICE_ACCOUNT_DIR.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.error import URLError

import redis

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
BUSY_COST = 1000
IDLE_COST = 0
POLL_S = 2.0
IDLE_AFTER_S = 30.0
"""How long a worker stays idle before its pod is cheap to delete: jobs that follow each other closely keep the
busy cost instead of costing two API writes each."""
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
WORKERS_SET = "rq:workers"
WORKER_KEY = "rq:worker:{}"

logger = logging.getLogger("fasttask.pod-deletion-cost")


def pod_is_busy(client: redis.Redis, pod: str) -> bool:
    """Whether a fasttask worker of this pod has a job in hand. Workers are named fasttask-HOST-PID-..., with HOST
    the pod's name (and a -LANE suffix per lane of a concurrent worker); their records keep RQ's `state`."""
    prefix = WORKER_KEY.format(f"fasttask-{pod}-")
    keys = [raw.decode() if isinstance(raw, bytes) else raw for raw in client.smembers(WORKERS_SET)]
    mine = [key for key in keys if key.startswith(prefix)]  # RQ's set holds the workers' keys
    if not mine:
        return False
    with client.pipeline(transaction=False) as pipe:
        for key in mine:
            pipe.hget(key, "state")
        states = pipe.execute()
    return any(state == b"busy" for state in states)


class Cost:
    """The cost to report: busy at once, idle only after `idle_after_s` without a job."""

    def __init__(self, idle_after_s: float) -> None:
        self.idle_after_s = idle_after_s
        self.reported: int | None = None
        self._idle_since: float | None = None

    def wanted(self, busy: bool, now: float) -> int:
        if busy:
            self._idle_since = None
            return BUSY_COST
        if self._idle_since is None:
            self._idle_since = now
        if self.reported is None or now - self._idle_since >= self.idle_after_s:
            return IDLE_COST
        return self.reported


class PodPatcher:
    """Sets the annotation on one pod through the Kubernetes API (a JSON merge patch)."""

    def __init__(self, api_url: str, namespace: str, pod: str, account_dir: Path) -> None:
        self.url = f"{api_url.rstrip('/')}/api/v1/namespaces/{namespace}/pods/{pod}"
        self.account_dir = account_dir
        ca = account_dir / "ca.crt"
        self.context = ssl.create_default_context(cafile=str(ca)) if api_url.startswith("https:") else None

    def set_cost(self, cost: int) -> None:
        # the projected token is rotated by the kubelet: read it for every request
        token = (self.account_dir / "token").read_text().strip()
        body = json.dumps({"metadata": {"annotations": {ANNOTATION: str(cost)}}}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="PATCH",
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/merge-patch+json",
                "Accept": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10, context=self.context) as answer:
            answer.read()


def default_api_url(env: dict[str, str]) -> str:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise SystemExit("pod-deletion-cost: not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset)")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def run(env: dict[str, str], stop: threading.Event) -> int:
    missing = [name for name in ("POD_NAME", "POD_NAMESPACE", "FTAPI_REDIS_URL") if not env.get(name)]
    if missing:
        print(f"pod-deletion-cost: set {', '.join(missing)}", file=sys.stderr)
        return 2
    pod = env["POD_NAME"]
    poll_s = float(env.get("DELETION_COST_POLL_S", POLL_S))
    cost = Cost(float(env.get("DELETION_COST_IDLE_AFTER_S", IDLE_AFTER_S)))
    patcher = PodPatcher(
        env.get("KUBERNETES_API_URL") or default_api_url(env),
        env["POD_NAMESPACE"],
        pod,
        Path(env.get("SERVICE_ACCOUNT_DIR", SERVICE_ACCOUNT_DIR)),
    )
    client: redis.Redis = redis.Redis.from_url(env["FTAPI_REDIS_URL"], socket_connect_timeout=2, socket_timeout=5)
    logger.info("keeping %s of pod %s at %d (busy) / %d (idle)", ANNOTATION, pod, BUSY_COST, IDLE_COST)
    try:
        while not stop.is_set():
            try:
                wanted = cost.wanted(pod_is_busy(client, pod), time.monotonic())
            except redis.RedisError as exc:
                logger.warning("cannot read the worker's state from Redis: %s", exc)
                stop.wait(poll_s)
                continue
            if wanted != cost.reported:
                try:
                    patcher.set_cost(wanted)
                    cost.reported = wanted
                    logger.info("%s=%d", ANNOTATION, wanted)
                except (URLError, OSError) as exc:
                    logger.warning("cannot set %s: %s", ANNOTATION, exc)
            stop.wait(poll_s)
    finally:
        client.close()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run(dict(os.environ), stop)


if __name__ == "__main__":
    sys.exit(main())
