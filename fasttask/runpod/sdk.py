"""The runpod SDK, imported when first needed: no other module of fasttask imports it."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import MissingExtra


def runpod_sdk() -> Any:
    """The `runpod` module, or MissingExtra saying which extra to install."""
    try:
        return importlib.import_module("runpod")
    except ImportError as exc:
        raise MissingExtra("FTAPI_BACKEND=runpod needs the runpod SDK: pip install 'fasttask[runpod]'") from exc
