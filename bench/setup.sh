#!/usr/bin/env bash
# Installs what bench/core.py needs besides the project's own venv (/work/main/.venv or
# whatever ../.venv is): the peer, fast-task-api 1.2.9, in bench/.venv-peer, and wrk.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3}"
if [ ! -x "$here/.venv-peer/bin/python" ]; then
  "$py" -m venv "$here/.venv-peer"
fi
# 1.2.9: the last fast-task-api release whose default constructor works
"$here/.venv-peer/bin/pip" install -q "fast-task-api==1.2.9" "httpx>=0.27"
if ! command -v wrk >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
  else
    echo "wrk not found and no apt-get: install wrk by hand (core.py skips the wrk driver without it)" >&2
  fi
fi
# the fasttask side and the Python driver run from the project venv
if [ -x "$here/../.venv/bin/pip" ]; then
  "$here/../.venv/bin/pip" install -q -e "$here/.." httpx
fi
echo "bench setup done"
