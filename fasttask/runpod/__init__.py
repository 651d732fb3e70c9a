"""Runpod serverless mode (FTAPI_BACKEND=runpod): every task endpoint of the app behind one runpod handler.

The only package that imports the runpod SDK (the `runpod` extra), and only once the app starts in this
mode: `sdk` loads it, `handler` is the handler and `serve_runpod`, `progress` sends throttled progress
reports, `files` places file results inline or in a bucket (through `fasttask.storage`).
"""
