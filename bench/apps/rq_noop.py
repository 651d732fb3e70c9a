"""Raw RQ side of bench/distributed.py: the no-op job function, imported by RQ workers as
`bench.apps.rq_noop.noop` (run from the repository root, or with it on PYTHONPATH)."""


def noop() -> str:
    return "ok"
