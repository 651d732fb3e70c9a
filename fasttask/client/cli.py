"""`fasttask call`: submit a job from the shell, show its progress, print its result and save its files.

A generator task's outputs are printed as they come (one line each: text as it is, anything else as JSON,
files as the path they were saved at), instead of the list of them at the end; with `--json` stdout stays
exactly the result.

Exit status: 0 when the job finished, 1 when it failed, was cancelled or timed out, 2 on a usage or
connection error (the service could not be reached, or refused the request), 130 on Ctrl-C (which cancels
the job).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..jobs import JobStatus
from ..webhooks import EVENTS as WEBHOOK_EVENTS
from ._errors import ClientError, ConnectionFailed, JobFailed
from ._files import RemoteFile, safe_file_name
from ._progress import JobBar, ProgressDisplay, ProgressLines
from ._state import JobState
from ._sync import Client, Job

EXIT_FINISHED = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command line that cannot be turned into a call."""


def add_call_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `fasttask call` on the `fasttask` command's subcommands."""
    call = commands.add_parser(
        "call",
        help="submit a job to a fasttask service, wait for it and print its result",
        description="Submit a job, show its progress on stderr, print the result on stdout and save result files.",
    )
    call.add_argument("url", metavar="URL", help="the service's base URL, e.g. http://127.0.0.1:8000")
    call.add_argument("path", metavar="PATH", help="the task's path, e.g. /make_fries")
    call.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter, sent as a form field (repeat a key for a list; JSON text for a model or dict)",
    )
    call.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        metavar="NAME=@PATH",
        help="a file parameter, uploaded from PATH (repeat NAME for a list of files)",
    )
    call.add_argument(
        "--out", type=Path, default=Path("."), metavar="DIR", help="where result files go (default: the current one)"
    )
    call.add_argument("--json", action="store_true", help="print exactly the result as JSON")
    call.add_argument("--api-key", default=None, metavar="KEY", help="the service's API key (default: $FTAPI_API_KEY)")
    call.add_argument(
        "--idempotency-key",
        default=None,
        metavar="KEY",
        help="the submit's Idempotency-Key (default: a new random one): the same KEY again gives the same job",
    )
    call.add_argument(
        "--webhook",
        default=None,
        metavar="URL",
        help="have the service POST the job's events to URL (the parameters then go as JSON, files inline)",
    )
    call.add_argument(
        "--webhook-event",
        action="append",
        default=None,
        choices=WEBHOOK_EVENTS,
        dest="webhook_events",
        help="an event --webhook receives (repeat for several; default: completed)",
    )
    call.set_defaults(handler=run_call)


def run_call(args: argparse.Namespace) -> int:
    try:
        params = parse_params(args.param, args.file)
        client = Client(args.url, args.api_key or os.environ.get("FTAPI_API_KEY") or None)
    except (UsageError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    path = args.path if args.path.startswith("/") else f"/{args.path}"
    with client:
        try:
            # no `Prefer: wait`: the progress shows from the start, and Ctrl-C knows which job to cancel
            if args.webhook is None and args.webhook_events is not None:
                raise UsageError("--webhook-event needs --webhook")
            job = client.submit_params(
                path,
                params if args.webhook is None else json_params(params),
                as_form=args.webhook is None,  # the webhook envelope is JSON
                idempotency_key=args.idempotency_key,
                webhook=args.webhook,
                webhook_events=args.webhook_events,
            )
        except UsageError as exc:
            return _fail(str(exc), EXIT_USAGE)
        except (ClientError, OSError) as exc:
            return _fail(str(exc), EXIT_USAGE)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        _say(f"job {job.id} submitted to {path}")
        try:
            return _finish(job, args)
        except KeyboardInterrupt:
            try:
                job.cancel()
            except ClientError as exc:
                return _fail(f"interrupted; cancelling job {job.id} failed: {exc}", EXIT_INTERRUPTED)
            _say(f"interrupted: job {job.id} cancelled")
            return EXIT_INTERRUPTED
        except (ClientError, OSError) as exc:
            return _fail(f"{exc} (job {job.id})", EXIT_USAGE)


def _finish(job: Job, args: argparse.Namespace) -> int:
    display: ProgressDisplay = JobBar(sys.stderr) if sys.stderr.isatty() else ProgressLines(sys.stderr)
    saved: list[Path] = []
    if args.json:  # stdout is exactly the result: nothing before it
        state, printed = job._wait(None, display), 0
    else:
        state, printed = _stream(job, display, lambda output: _print_output(output, args.out, saved))
    if state.status is not JobStatus.FINISHED:
        return _fail(str(JobFailed(state)), EXIT_JOB_FAILED)
    if printed and isinstance(state.result, list):  # a generator's outputs: print those the stream missed
        for output in state.result[printed:]:
            _print_output(output, args.out, saved)
        return EXIT_FINISHED
    shown = save_files(state.result, args.out, saved)
    if args.json:
        print(json.dumps(state.raw.get("result"), ensure_ascii=False))
        for path in saved:
            _say(f"saved {path}")
    elif isinstance(shown, str):
        print(shown)
    elif shown is not None:
        print(json.dumps(shown, indent=2, ensure_ascii=False))
    return EXIT_FINISHED


def _stream(job: Job, display: ProgressDisplay, on_output: Callable[[Any], None]) -> tuple[JobState, int]:
    """Follow the job's event stream to its end, showing progress and handing each output to `on_output`;
    returns the final state and how many outputs were handed over. When the stream breaks off, waiting
    goes on by long poll (the outputs it missed are in the result)."""
    printed = 0
    final: JobState | None = None
    events = job._transport.events(job.id)
    try:
        for event in events:
            if event.kind == "output":
                on_output(event.output)
                printed += 1
            elif event.job is not None:
                display.update(event.job)
                if event.job.is_final:
                    final = event.job
                    break
    except ConnectionFailed:
        pass
    finally:
        events.close()
    if final is None:
        return job._wait(None, display), printed
    display.close()
    return final, printed


def _print_output(output: Any, out_dir: Path, saved: list[Path]) -> None:
    shown = save_files(output, out_dir, saved)
    print(shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False), flush=True)


def parse_params(params: list[str], files: list[str]) -> dict[str, Any]:
    """Form values from `-p KEY=VALUE` and `-f NAME=@PATH`; a repeated key gives a list."""
    values: dict[str, list[Any]] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-p expects KEY=VALUE, got {item!r}")
        values.setdefault(key, []).append(value)
    for item in files:
        key, sep, value = item.partition("=")
        value = value[1:] if value.startswith("@") else value
        if not sep or not key or not value:
            raise UsageError(f"-f expects NAME=@PATH, got {item!r}")
        path = Path(value).expanduser()
        if not path.is_file():
            raise UsageError(f"-f {key}: no such file: {value}")
        if key in values and not isinstance(values[key][0], Path):
            raise UsageError(f"{key!r} is given both as -p and as -f")
        values.setdefault(key, []).append(path)
    return {key: items[0] if len(items) == 1 else items for key, items in values.items()}


def json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Form values as they go in a JSON body: a value written as a JSON object or array is sent as one (a
    model, a dict, a list), every other text as text, which the service reads as it reads a form field."""
    return {
        key: [_json_value(item) for item in value] if isinstance(value, list) else _json_value(value)
        for key, value in params.items()
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def save_files(value: Any, out_dir: Path, saved: list[Path]) -> Any:
    """Save every file result in `value` into `out_dir` (never over an existing file), adding each path to
    `saved`; returns the value with each file replaced by the path it was saved at."""
    if isinstance(value, RemoteFile):
        out_dir.mkdir(parents=True, exist_ok=True)
        path = value.save(_free_path(out_dir, safe_file_name(value.file_name)))
        saved.append(path)
        return str(path)
    if isinstance(value, list):
        return [save_files(item, out_dir, saved) for item in value]
    if isinstance(value, dict):
        return {key: save_files(item, out_dir, saved) for key, item in value.items()}
    return value


def _free_path(directory: Path, name: str) -> Path:
    candidate = directory / name
    stem, suffix = Path(name).stem, Path(name).suffix
    number = 1
    while candidate.exists():
        candidate = directory / f"{stem}-{number}{suffix}"
        number += 1
    return candidate


def _say(message: str) -> None:
    print(f"fasttask: {message}", file=sys.stderr, flush=True)


def _fail(message: str, code: int) -> int:
    _say(message)
    return code
