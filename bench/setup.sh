#!/usr/bin/env bash
# Installs what bench/core.py, bench/distributed.py and bench/batching.py need besides the project's own venv
# (the repository's .venv): the peer, fast-task-api 1.2.9, in bench/.venv-peer,
# Celery in bench/.venv-celery, Ray Serve in ~/.cache/fasttask-bench/ray-venv, wrk and redis-server.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3}"
if [ ! -x "$here/.venv-peer/bin/python" ]; then
  "$py" -m venv "$here/.venv-peer"
fi
# 1.2.9: the last fast-task-api release whose default constructor works
"$here/.venv-peer/bin/pip" install -q "fast-task-api==1.2.9" "httpx>=0.27"
# distributed.py's Celery row (it reports the row unavailable without this venv)
if [ ! -x "$here/.venv-celery/bin/python" ]; then
  "$py" -m venv "$here/.venv-celery"
fi
"$here/.venv-celery/bin/pip" install -q "celery[redis]"
# batching.py's Ray Serve row (it reports the row unavailable without this venv); outside the repository,
# as it is large: FASTTASK_RAY_VENV moves it (then pass --ray-python to batching.py)
ray_venv="${FASTTASK_RAY_VENV:-$HOME/.cache/fasttask-bench/ray-venv}"
if [ ! -x "$ray_venv/bin/python" ]; then
  mkdir -p "$(dirname "$ray_venv")"
  "$py" -m venv "$ray_venv"
fi
"$ray_venv/bin/pip" install -q "ray[serve]"
for tool in wrk redis-server; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      apt-get install -y "$tool" || { apt-get update && apt-get install -y "$tool"; }
    else
      echo "$tool not found and no apt-get: install it by hand" >&2
    fi
  fi
done
# the fasttask side (with its Redis queue: rq, redis, hiredis), the Python driver and py-spy (distributed.py
# --profile) run from the project venv
if [ -x "$here/../.venv/bin/pip" ]; then
  "$here/../.venv/bin/pip" install -q -e "$here/..[redis]" httpx py-spy
fi
echo "bench setup done"
