"""The deployment files (Dockerfile, deploy/compose, deploy/k8s) checked offline, against fasttask itself.

No container engine and no cluster are needed: the Kubernetes objects are validated against the Kubernetes
OpenAPI schemas that `kubernetes-validate` ships, the KEDA objects against tests/support/keda_schema.py, the compose
file against the compose specification (`compose-spec`), and every command, flag, setting, port and probe
path they use against the CLI parser, `Settings` and the routes of a built app. The image's entrypoint runs
for real, with the manifests' own arguments, as plain processes on a real Redis.
"""

from __future__ import annotations

import argparse
import base64
import copy
import dataclasses
import http.server
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI, Settings
from fasttask.cli import build_parser, load_app
from fasttask.redis.keys import queue_name
from tests.support import ROOT
from tests.support.keda_schema import SCHEMAS as KEDA_SCHEMAS
from tests.support.kustomize import KustomizeError, render
from tests.support.servers import LiveServer, free_port

DEPLOY = ROOT / "deploy"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
COMPOSE_DIR = DEPLOY / "compose"
KUSTOMIZATIONS = ["base", "overlays/keda", "overlays/hpa", "overlays/gpu-pools"]
K8S_VERSIONS = ["1.29", "1.37"]
"""The oldest Kubernetes the manifests are meant for, and the newest that kubernetes-validate knows."""
EXAMPLE_APP = "examples.fries:app"

Obj = dict[str, Any]

SETTINGS_VARS = {f"FTAPI_{field.name.upper()}" for field in dataclasses.fields(Settings)}
IMAGE_VARS = {"FTAPI_APP"}
"""FTAPI_* variables that are not settings: the image's entrypoint reads FTAPI_APP (MODULE:APP)."""


# -- helpers ---------------------------------------------------------------------------------------------------


def check_env_names(names: Iterable[str], where: str) -> None:
    unknown = sorted({name for name in names if name.startswith("FTAPI_") and name not in SETTINGS_VARS | IMAGE_VARS})
    assert not unknown, f"{where} sets {unknown}, which fasttask does not read (settings: {sorted(SETTINGS_VARS)})"


def ftapi_settings(env: dict[str, str]) -> Settings:
    """What a fasttask process would be configured as with this environment."""
    return Settings.from_env({key: value for key, value in env.items() if key.startswith("FTAPI_")})


def parse_fasttask(argv: list[str]) -> Any:
    """Parses a fasttask command line as `fasttask` would, refusing abbreviated flags (argparse takes
    `--endpoint` for `--endpoints`; the files must spell the real names)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`fasttask {' '.join(argv)}` is not a valid fasttask command")
    for word in argv:
        option = word.partition("=")[0]
        assert not option.startswith("--") or option in cli_options(args.command), f"fasttask {args.command} {option}"
    return args


def cli_options(command: str) -> set[str]:
    """The flags `fasttask <command>` takes."""
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {option for action in commands.choices[command]._actions for option in action.option_strings}


def get_routes(app: FastTaskAPI) -> set[str]:
    return {route.path for route in app.fastapi.routes if "GET" in (getattr(route, "methods", None) or ())}


_GJSON_QUERY = re.compile(r'#\((\w+)==("(?:[^"\\]|\\.)*")\)')


def gjson(document: Any, path: str) -> Any:
    """The value at a GJSON path (https://github.com/tidwall/gjson#path-syntax), for the subset KEDA's
    metrics-api triggers here use: keys, array indexes and `#(key=="value")` queries."""
    parts: list[str] = []
    current, depth, quoted = "", 0, False
    for char in path:
        if quoted:
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "." and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    value = document
    for part in parts:
        if part.startswith("#("):
            match = _GJSON_QUERY.fullmatch(part)
            assert match, f"unsupported GJSON query {part!r}"
            key, literal = match.group(1), json.loads(match.group(2))
            value = next((item for item in value if isinstance(item, dict) and item.get(key) == literal), None)
        elif isinstance(value, list) and part.isdigit():
            value = value[int(part)] if int(part) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            value = None
        if value is None:
            return None
    return value


@pytest.fixture(scope="session")
def run_entrypoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[int, list[str], str]]:
    """Runs deploy/docker/entrypoint.sh with stand-ins for `fasttask`, `python` and `rq` on PATH; returns its
    exit code, the argv the stand-in was exec'd with (program name first) and FTAPI_BACKEND as it saw it."""
    stubs = tmp_path_factory.mktemp("entrypoint-stubs")
    for name in ("fasttask", "python", "rq"):
        stub = stubs / name
        stub.write_text(
            '#!/bin/sh\n{ echo "${FTAPI_BACKEND-}"; basename "$0"; for a in "$@"; do echo "$a"; done; } > "$STUB_OUT"\n'
        )
        stub.chmod(0o755)

    def run(args: list[str], env: dict[str, str]) -> tuple[int, list[str], str]:
        out = stubs / "out"
        out.unlink(missing_ok=True)
        done = subprocess.run(
            ["/bin/sh", str(ENTRYPOINT), *args],
            env={**env, "PATH": f"{stubs}:/usr/bin:/bin", "STUB_OUT": str(out)},
            capture_output=True,
            text=True,
            timeout=10,
        )
        if not out.exists():
            return done.returncode, [], done.stderr
        backend, *argv = out.read_text().splitlines()
        return done.returncode, argv, backend

    return run


def container_fasttask_argv(run_entrypoint: Callable[..., Any], args: list[str], env: dict[str, str]) -> list[str]:
    """The `fasttask ...` argv (without the program name) that the image runs for these container args."""
    code, argv, _ = run_entrypoint(args, env)
    assert code == 0 and argv and argv[0] == "fasttask", f"container args {args} do not start fasttask: {argv}"
    return argv[1:]


# -- Settings: the names the deployment files use are the names fasttask reads --------------------------------


def test_every_setting_is_read_from_its_ftapi_variable() -> None:
    """The deployment checks below trust FTAPI_<FIELD> to be the variable of each Settings field: prove it, so
    that renaming a variable (or a field) breaks this test and every deployment file that still uses it."""
    default = Settings.from_env({})
    for field in dataclasses.fields(Settings):
        var = f"FTAPI_{field.name.upper()}"
        env = {var: "probe"}
        if isinstance(field.default, bool):
            env[var] = "0" if field.default else "1"
        elif isinstance(field.default, (int, float)) or field.name == "concurrency":
            env[var] = "4321"
        elif field.name == "cors_origins":
            env[var] = "https://probe.example"
        elif field.name == "webhook_secret":
            env[var] = "whsec_cHJvYmU="
        elif field.name == "webhook_retry_s":
            env[var] = "4321"
        elif field.name in ("backend", "deployment", "queue", "log_format"):
            choices = {"backend": "runpod", "deployment": "serverless", "queue": "redis", "log_format": "json"}
            env[var] = choices[field.name]
            if field.name == "queue":
                env["FTAPI_REDIS_URL"] = "redis://probe:6379/0"
        changed = Settings.from_env(env)
        assert getattr(changed, field.name) != getattr(default, field.name), f"{var} does not set {field.name}"


# -- Dockerfile -------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Instruction:
    keyword: str
    value: str
    stage: int
    """-1 before the first FROM (global ARGs), then 0, 1, ..."""


def dockerfile() -> list[Instruction]:
    logical: list[str] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    instructions, stage = [], -1
    for text in logical:
        keyword, _, value = text.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), value.strip(), stage))
    return instructions


def build_args(instructions: list[Instruction]) -> dict[str, str]:
    values = {}
    for instruction in instructions:
        if instruction.keyword == "ARG":
            name, _, default = shlex.split(instruction.value)[0].partition("=")
            values[name] = default
    return values


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(instruction.stage for instruction in instructions)
    return [instruction for instruction in instructions if instruction.stage == last]


def image_env(instructions: list[Instruction]) -> dict[str, str]:
    env = {}
    for instruction in final_stage(instructions):
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.value):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    (found,) = [instruction for instruction in instructions if instruction.keyword == keyword]
    return found


def test_dockerfile_is_multi_stage_slim_and_runs_as_non_root() -> None:
    instructions = dockerfile()
    froms = [instruction.value for instruction in instructions if instruction.keyword == "FROM"]
    assert len(froms) >= 2, "the image is built in one stage and copied into a clean one"
    final = final_stage(instructions)
    assert final[0].value.split()[0] == "${BASE_IMAGE}"
    uid, _, gid = only(final, "USER").value.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), "numeric non-root user (runAsNonRoot)"
    assert any(
        instruction.keyword == "COPY" and "--from=" in instruction.value and "/opt/venv" in instruction.value
        for instruction in final
    ), "the final stage takes the built virtualenv from the build stage"


def test_dockerfile_base_is_a_slim_python_pinned_by_digest() -> None:
    """Both stages start from BASE_IMAGE, whose default names a slim Python >= 3.10 by tag and digest: a rebuild
    gets the same base until someone updates the digest (the Dockerfile says how)."""
    instructions = dockerfile()
    base = build_args(instructions)["BASE_IMAGE"]
    match = re.fullmatch(r"python:3\.(\d+)-slim(?:-\w+)?@sha256:[0-9a-f]{64}", base)
    assert match, f"BASE_IMAGE {base!r} is not a slim Python image pinned by digest"
    assert int(match.group(1)) >= 10, "fasttask needs Python >= 3.10"
    froms = [instruction.value.split()[0] for instruction in instructions if instruction.keyword == "FROM"]
    assert froms == ["${BASE_IMAGE}"] * len(froms), "every stage starts from the pinned base"
    comments = (ROOT / "Dockerfile").read_text()
    assert "imagetools inspect" in comments and "skopeo inspect" in comments, "how to update the digest"


def test_dockerfile_installs_dependencies_before_copying_the_source() -> None:
    """A code change must not reinstall the dependencies: they are installed in a layer that only needs
    pyproject.toml and the version file, and the package is installed after the source, with --no-deps."""
    build = [instruction for instruction in dockerfile() if instruction.stage == 0]
    steps = [(i.keyword, i.value) for i in build if i.keyword in ("COPY", "RUN")]
    (deps,) = [n for n, (keyword, value) in enumerate(steps) if keyword == "RUN" and "$EXTRA_PACKAGES" in value]
    copied_before = [shlex.split(value)[:-1] for keyword, value in steps[:deps] if keyword == "COPY"]
    assert sorted(source for sources in copied_before for source in sources) == [
        "fasttask/_version.py",
        "pyproject.toml",
    ], "only what the dependency list and the version need comes before the dependency layer"
    (package,) = [value for keyword, value in steps[deps + 1 :] if keyword == "RUN" and "pip install" in value]
    assert "--no-deps" in package
    copied_after = {
        source for keyword, value in steps[deps + 1 :] if keyword == "COPY" for source in shlex.split(value)[:-1]
    }
    assert {"fasttask", "README.md"} <= copied_after


def test_dockerfile_leaves_no_apt_lists_or_caches() -> None:
    """Every apt-get install removes the package lists and apt's caches (the .bin files stay behind on bases
    without Debian's image clean-up settings, some 80 MB)."""
    runs = [instruction.value for instruction in dockerfile() if instruction.keyword == "RUN"]
    installs = [run for run in runs if "apt-get install" in run]
    assert installs
    for run in installs:
        assert "rm -rf /var/lib/apt/lists/*" in run and "/var/cache/apt/*.bin" in run, run


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    final = final_stage(dockerfile())
    runs = " ".join(instruction.value for instruction in final if instruction.keyword == "RUN")
    installed: set[str] = set()
    for match in re.finditer(r"apt-get install ([^&;]*)", runs):
        installed |= {word for word in match.group(1).split() if not word.startswith("-")}
    assert installed <= {"tini"}, f"the final stage installs {installed}"
    assert "rm -rf /var/lib/apt/lists" in runs
    assert "pip install" not in runs, "packages are installed in the build stage only"
    assert not any("$BUILD_PACKAGES" in instruction.value for instruction in final)


def test_dockerfile_env_and_build_args_match_fasttask(monkeypatch: pytest.MonkeyPatch) -> None:
    instructions = dockerfile()
    env = image_env(instructions)
    check_env_names(env, "the Dockerfile")
    settings = ftapi_settings(env)
    assert settings.host == "0.0.0.0", "a container must listen on all interfaces"
    assert only(final_stage(instructions), "EXPOSE").value == str(settings.port)
    extras = importlib_metadata.metadata("fasttask").get_all("Provides-Extra") or []
    default_extras = build_args(instructions)["EXTRAS"]
    assert default_extras == "redis", "the image speaks Redis by default (workers need it)"
    assert set(default_extras.split(",")) <= set(extras)
    assert re.search(r'pip install "\.\[\$\{EXTRAS\}\]"', " ".join(i.value for i in instructions if i.keyword == "RUN"))
    # the default app is importable from the image's working directory (APP_DIR copied under it)
    assert env["FTAPI_APP"] == EXAMPLE_APP and build_args(instructions)["APP_DIR"] == EXAMPLE_APP.split(".")[0]
    monkeypatch.chdir(ROOT)
    assert isinstance(load_app(env["FTAPI_APP"]), FastTaskAPI)
    entrypoint = json.loads(only(final_stage(instructions), "ENTRYPOINT").value)
    assert entrypoint[0].endswith("tini") and entrypoint[-1] == "/usr/local/bin/fasttask-entrypoint"
    assert json.loads(only(final_stage(instructions), "CMD").value) == ["serve"]


def dockerignore_patterns() -> list[re.Pattern[str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "exceptions are not modelled by this test"
        regex, index = "", 0
        line = line.strip("/")
        while index < len(line):
            if line.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif line.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif line[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif line[index] == "?":
                regex, index = regex + "[^/]", index + 1
            elif line[index] == "[":
                end = line.index("]", index)
                regex, index = regex + line[index : end + 1], end + 1
            else:
                regex, index = regex + re.escape(line[index]), index + 1
        patterns.append(re.compile(regex))
    return patterns


def dockerignored(relative: str, patterns: list[re.Pattern[str]]) -> bool:
    """Docker leaves a path out when it, or a directory above it, matches a pattern."""
    parts = relative.split("/")
    return any(pattern.fullmatch("/".join(parts[:n])) for pattern in patterns for n in range(1, len(parts) + 1))


def test_dockerfile_copies_files_that_exist_and_are_not_dockerignored() -> None:
    instructions = dockerfile()
    args = build_args(instructions)
    patterns = dockerignore_patterns()
    sources = []
    for instruction in instructions:
        if instruction.keyword == "COPY" and "--from=" not in instruction.value:
            words = [word for word in shlex.split(instruction.value) if not word.startswith("--")]
            sources += [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], word) for word in words[:-1]]
    assert {"pyproject.toml", "README.md", "fasttask", "deploy/docker/entrypoint.sh", "examples"} <= set(sources)
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file in the build context"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")] + [p for p in path.rglob("*.typed")]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not dockerignored(relative, patterns), f".dockerignore leaves out {relative}, which is copied"
    for secret in (".git", ".venv", "deploy/compose/.env", "bench/.venv-celery", "tests"):
        assert dockerignored(secret, patterns), f".dockerignore should leave out {secret}"


def test_dockerfile_healthcheck_probes_health_without_curl(live_server: Callable[[FastTaskAPI], LiveServer]) -> None:
    healthcheck = only(final_stage(dockerfile()), "HEALTHCHECK").value
    options, _, command = healthcheck.partition(" CMD ")
    argv = json.loads(command)
    assert argv[0] == "python" and "curl" not in healthcheck and "wget" not in healthcheck
    assert "/health" in argv[-1]
    server = live_server(FastTaskAPI(title="probe", queue="local"))
    argv[0] = sys.executable
    ok = subprocess.run(argv, env={**os.environ, "FTAPI_PORT": str(server.port)}, capture_output=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run(argv, env={**os.environ, "FTAPI_PORT": str(free_port())}, capture_output=True, timeout=20)
    assert down.returncode != 0, "the health check must fail when nothing serves"
    assert "--timeout=" in options and "--start-period=" in options


# -- the image's entrypoint -------------------------------------------------------------------------------------


def test_entrypoint_maps_roles_to_fasttask_commands(run_entrypoint: Callable[..., Any]) -> None:
    env = {"FTAPI_APP": EXAMPLE_APP}
    cases = {
        "": "fasttask serve APP",
        "serve": "fasttask serve APP",
        "serve --port 9000 --access-log": "fasttask serve APP --port 9000 --access-log",
        "serve other.module:api --log-level debug": "fasttask serve other.module:api --log-level debug",
        "worker --endpoints /make_fries --grace 5": "fasttask worker APP --endpoints /make_fries --grace 5",
        "rq info": "rq info",
    }
    for args, expected in cases.items():
        code, argv, backend = run_entrypoint(args.split(), env)
        assert code == 0 and argv == expected.replace("APP", EXAMPLE_APP).split(), (args, argv)
        assert backend == ""
        if argv[0] == "fasttask":
            parsed = parse_fasttask(argv[1:])
            assert parsed.command == argv[1] and parsed.app == argv[2]
    code, argv, backend = run_entrypoint(["runpod"], env)
    assert (code, argv, backend) == (0, ["python", "-m", "examples.fries"], "runpod")
    code, argv, stderr = run_entrypoint(["worker"], {})
    assert code == 2 and argv == [] and "FTAPI_APP" in stderr


# -- Kubernetes -------------------------------------------------------------------------------------------------


SECRETS_ENV = "base/secrets.env"
"""The operator's own secrets, from which kustomize makes the Secret (ignored by git, never committed)."""
TEST_API_KEY = "k8s-test-" + "0123456789abcdef" * 2


@pytest.fixture(scope="module")
def k8s_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with the secrets.env an operator writes (see deploy/k8s/base/kustomization.yaml)."""
    copy_dir = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(DEPLOY / "k8s", copy_dir, ignore=shutil.ignore_patterns("secrets.env"))
    (copy_dir / SECRETS_ENV).write_text(f"FTAPI_API_KEY={TEST_API_KEY}\nAWS_ACCESS_KEY_ID=\nAWS_SECRET_ACCESS_KEY=\n")
    return copy_dir


@pytest.fixture(scope="module")
def rendered(k8s_dir: Path) -> dict[str, list[Obj]]:
    return {name: render(k8s_dir / name) for name in KUSTOMIZATIONS}


def secret_data(secret: Obj) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(objects: list[Obj]) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet")]


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def selects(selector: dict[str, str], workload: Obj) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


def container_env(container: Obj, objects: list[Obj]) -> dict[str, str]:
    """The environment a container starts with (ConfigMap and Secret sources, then its own env)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
        if "secretRef" in source:
            env.update(secret_data(one(objects, "Secret", source["secretRef"]["name"])))
    env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    return env


SIDECAR = "pod-deletion-cost"
"""The worker pods' second container: the image's deletion-cost keeper, not a fasttask process."""
SIDECAR_SCRIPT = DEPLOY / "docker" / "pod_deletion_cost.py"


def fasttask_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, container) of every container that runs a fasttask process of the image."""
    image = pod_spec(one(objects, "Deployment", "fasttask-api"))["containers"][0]["image"]
    for workload in workloads(objects):
        for container in pod_spec(workload)["containers"]:
            if container["image"] == image and container["name"] != SIDECAR:
                yield workload, container


def pools(objects: list[Obj], run_entrypoint: Callable[..., Any]) -> dict[str, list[str] | None]:
    """Worker Deployment name -> the endpoints its workers serve (None: all of the app's)."""
    result = {}
    for workload, container in fasttask_containers(objects):
        args = parse_fasttask(
            container_fasttask_argv(run_entrypoint, container["args"], container_env(container, objects))
        )
        if args.command == "worker":
            result[workload["metadata"]["name"]] = args.endpoints.split(",") if args.endpoints else None
    return result


def app_of(objects: list[Obj], run_entrypoint: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> FastTaskAPI:
    """The app these manifests serve: the example app when they name it; otherwise (an overlay written for
    the user's own image) a stand-in with the task endpoints the worker pools name."""
    target = one(objects, "ConfigMap", "fasttask-config")["data"]["FTAPI_APP"]
    if target == EXAMPLE_APP:
        monkeypatch.chdir(ROOT)
        return load_app(target)
    app = FastTaskAPI(title="stand-in", queue="local")
    for endpoints in pools(objects, run_entrypoint).values():
        assert endpoints, "an overlay for another app must name each pool's endpoints"
        for path in endpoints:
            app.task_endpoint(path)(lambda: None)
    return app


def test_no_usable_secret_is_committed_and_nothing_renders_without_the_operators(tmp_path: Path) -> None:
    """The Secret comes from secrets.env, which git ignores: no committed file holds a Secret with values, and
    the kustomizations refuse to render (kubectl too) until the operator writes that file."""
    for path in (DEPLOY / "k8s").rglob("*.y*ml"):
        for obj in load_yaml_documents(path):
            if isinstance(obj, dict) and obj.get("kind") == "Secret":
                assert not obj.get("stringData") and not obj.get("data"), f"{path} commits a Secret with values"
    for path in (DEPLOY / "k8s").rglob("*"):
        if path.is_file() and path.name != "secrets.env":
            assert "change-me" not in path.read_text(), f"{path} holds a placeholder key"
    if (ROOT / ".git").exists() and shutil.which("git"):
        for ignored in (f"deploy/k8s/{SECRETS_ENV}", "deploy/compose/.env"):
            check = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", ignored], timeout=10)
            assert check.returncode == 0, f"{ignored} is not ignored by git"
    bare = tmp_path / "k8s"
    shutil.copytree(DEPLOY / "k8s", bare, ignore=shutil.ignore_patterns("secrets.env"))
    for name in KUSTOMIZATIONS:
        with pytest.raises(KustomizeError, match=r"secrets\.env"):
            render(bare / name)
        kubectl = shutil.which("kubectl")
        if kubectl:
            refused = subprocess.run(
                [kubectl, "kustomize", str(bare / name)], capture_output=True, text=True, timeout=60
            )
            assert refused.returncode != 0 and "secrets.env" in refused.stderr


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_kustomizations_render_like_kubectl(rendered: dict[str, list[Obj]], k8s_dir: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Python rendering is checked by every other test")
    for name, objects in rendered.items():
        output = subprocess.run(
            [kubectl, "kustomize", str(k8s_dir / name)], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        theirs = [doc for doc in yaml.safe_load_all(output) if doc]

        def key(obj: Obj) -> str:
            return json.dumps(obj, sort_keys=True)

        assert sorted(map(key, objects)) == sorted(map(key, theirs)), f"{name} renders differently"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_builtin_objects_validate_against_the_kubernetes_schema(
    rendered: dict[str, list[Obj]], kustomization: str, version: str
) -> None:
    for obj in rendered[kustomization]:
        if (obj["apiVersion"], obj["kind"]) in KEDA_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{kustomization}: {obj['kind']}/{obj['metadata']['name']} at {path}: {exc.message}")


def validate_hpa_behavior(behavior: Obj) -> None:
    """KEDA passes this block to the HPA it makes: it must be a valid HorizontalPodAutoscalerBehavior."""
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "behavior-check"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
            "maxReplicas": 1,
            "behavior": behavior,
        },
    }
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(hpa, version, strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_keda_objects_validate_against_their_schema(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    for obj in rendered[kustomization]:
        schema = KEDA_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if schema is None:
            assert not obj["apiVersion"].startswith("keda.sh/"), f"no schema for {obj['kind']}"
            continue
        jsonschema.Draft202012Validator(schema).validate(obj)
        behavior = obj["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if behavior is not None:
            validate_hpa_behavior(behavior)


def test_the_schemas_refuse_misspelt_fields(rendered: dict[str, list[Obj]]) -> None:
    """The validations above are only worth something if a typo fails them."""
    objects = rendered["overlays/keda"]
    deployment = copy.deepcopy(one(objects, "Deployment", "fasttask-worker"))
    pod_spec(deployment)["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    scaled = copy.deepcopy(one(objects, "ScaledObject", "fasttask-worker"))
    scaled["spec"]["minReplicaCounts"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(KEDA_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")]).validate(scaled)
    scaled = copy.deepcopy(one(objects, "ScaledObject", "fasttask-worker"))
    scaled["spec"]["triggers"][0]["metadata"]["targetValue"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(KEDA_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")]).validate(scaled)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_references_between_objects_resolve(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    objects = rendered[kustomization]
    namespaces = [obj["metadata"]["name"] for obj in find(objects, "Namespace")]
    assert namespaces == ["fasttask"]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "fasttask", f"{obj['kind']}/{obj['metadata']['name']}"
    for workload in workloads(objects):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selects(selector, workload), f"{workload['metadata']['name']} does not select its own pods"
        for container in pod_spec(workload)["containers"]:
            container_env(container, objects)  # every ConfigMap / Secret it names exists
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in one(objects, "ConfigMap", ref["name"])["data"]
            mounts = {mount["name"] for mount in container.get("volumeMounts", [])}
            volumes = {volume["name"] for volume in pod_spec(workload).get("volumes", [])}
            claims = {claim["metadata"]["name"] for claim in workload["spec"].get("volumeClaimTemplates", [])}
            assert mounts <= volumes | claims
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})) and "memory" in resources.get("limits", {})
    for service in find(objects, "Service"):
        targets = [w for w in workloads(objects) if selects(service["spec"]["selector"], w)]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)} workloads"
        port_names = {port.get("name") for c in pod_spec(targets[0])["containers"] for port in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    for budget in find(objects, "PodDisruptionBudget"):
        targets = [w for w in workloads(objects) if selects(budget["spec"]["selector"]["matchLabels"], w)]
        assert len(targets) == 1, f"PodDisruptionBudget {budget['metadata']['name']} covers {len(targets)} workloads"
    for scaler in find(objects, "ScaledObject") + find(objects, "HorizontalPodAutoscaler"):
        target = scaler["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        one(objects, "Deployment", target["name"])
        for trigger in scaler["spec"].get("triggers", []):
            if "authenticationRef" in trigger:
                auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
                for ref in auth["spec"]["secretTargetRef"]:
                    assert ref["key"] in secret_data(one(objects, "Secret", ref["name"]))
    policies = find(objects, "NetworkPolicy")
    for policy in policies:
        allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
        for workload, _ in fasttask_containers(objects):
            assert selects(allowed, workload), f"{workload['metadata']['name']} may not reach Redis"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_containers_run_fasttask_commands_that_exist(
    rendered: dict[str, list[Obj]],
    kustomization: str,
    run_entrypoint: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = rendered[kustomization]
    for config in find(objects, "ConfigMap"):
        check_env_names(config["data"], f"ConfigMap {config['metadata']['name']}")
        ftapi_settings(config["data"])  # valid values
    for secret in find(objects, "Secret"):
        check_env_names(secret_data(secret), f"Secret {secret['metadata']['name']}")
    app = app_of(objects, run_entrypoint, monkeypatch)
    commands = set()
    for workload, container in fasttask_containers(objects):
        env = container_env(container, objects)
        check_env_names({item["name"] for item in container.get("env", [])}, workload["metadata"]["name"])
        args = parse_fasttask(container_fasttask_argv(run_entrypoint, container["args"], env))
        commands.add(args.command)
        assert args.app == env["FTAPI_APP"]
        if args.command == "worker" and args.endpoints:
            assert set(args.endpoints.split(",")) <= set(app.tasks), (
                f"{workload['metadata']['name']}: unknown endpoints"
            )
    assert commands == {"serve", "worker"}
    served = {path for endpoints in pools(objects, run_entrypoint).values() for path in endpoints or app.tasks}
    assert served == set(app.tasks), "every task endpoint has a worker pool"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_probes_hit_real_routes_on_the_served_port(
    rendered: dict[str, list[Obj]],
    kustomization: str,
    run_entrypoint: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = rendered[kustomization]
    routes = get_routes(app_of(objects, run_entrypoint, monkeypatch))
    api = one(objects, "Deployment", "fasttask-api")
    (container,) = pod_spec(api)["containers"]
    settings = ftapi_settings(container_env(container, objects))
    args = parse_fasttask(container_fasttask_argv(run_entrypoint, container["args"], container_env(container, objects)))
    port = args.port or settings.port
    assert (args.host or settings.host) == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for workload in workloads(objects):
        for probed in pod_spec(workload)["containers"]:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                http = probed.get(probe, {}).get("httpGet")
                if http and probed is container:
                    assert http["path"] in routes, f"{probe} {http['path']} is not a GET route of the app"
                    assert ports[http["port"]] == port
    assert {"/health", "/ready", "/queues"} <= routes
    service = one(objects, "Service", "fasttask-api")
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]


def test_the_image_user_matches_the_pods_security_context(rendered: dict[str, list[Obj]]) -> None:
    uid = int(only(final_stage(dockerfile()), "USER").value.split(":")[0])
    for name, objects in rendered.items():
        for workload, _ in fasttask_containers(objects):
            context = pod_spec(workload)["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == uid, (name, workload["metadata"]["name"])


@pytest.fixture
def stop_escalation_s(redis_url: str) -> float:
    """What a worker adds to its grace period when the job in hand outlives it: the time a task gets to notice
    the stop, then the time an interrupted task gets before the worker replaces its process (read from a real
    worker's guard, so a change there shows up here)."""
    from fasttask.redis.guard import ASK_FIRST_S
    from fasttask.worker import Worker

    app = FastTaskAPI(title="escalation", queue="local")
    app.task_endpoint("/noop")(lambda: None)
    worker = Worker(app, redis_url, install_signals=False)  # made, never run
    try:
        return ASK_FIRST_S + worker.guard._stuck_after_s
    finally:
        worker.loop.close()
        worker.redis.close()


TERMINATION_MARGIN_S = 15
"""Beyond grace + escalation: re-queueing the cut-off job (a few Redis round trips), deregistering, exiting."""


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_api_is_redundant_and_workers_outlive_their_grace_period(
    rendered: dict[str, list[Obj]], kustomization: str, run_entrypoint: Callable[..., Any], stop_escalation_s: float
) -> None:
    objects = rendered[kustomization]
    assert one(objects, "Deployment", "fasttask-api")["spec"]["replicas"] >= 2
    budget = one(objects, "PodDisruptionBudget", "fasttask-api")
    assert budget["spec"]["minAvailable"] >= 1
    for workload, container in fasttask_containers(objects):
        env = container_env(container, objects)
        args = parse_fasttask(container_fasttask_argv(run_entrypoint, container["args"], env))
        if args.command != "worker":
            continue
        grace = args.grace if args.grace is not None else ftapi_settings(env).worker_grace_s
        termination = pod_spec(workload)["terminationGracePeriodSeconds"]
        needed = grace + stop_escalation_s + TERMINATION_MARGIN_S
        assert termination >= needed, f"{workload['metadata']['name']}: {termination} s, needs {needed} s"
        assert "replicas" not in workload["spec"], "an autoscaler owns the worker count"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_workers_are_probed_on_their_metrics_port(
    rendered: dict[str, list[Obj]], kustomization: str, run_entrypoint: Callable[..., Any]
) -> None:
    """Liveness and a long startup probe on the worker's metrics server, and no readiness probe (an unready worker
    would stall rollouts with maxUnavailable 0 and node drains under the PodDisruptionBudget)."""
    objects = rendered[kustomization]
    checked = 0
    for workload, container in fasttask_containers(objects):
        args = parse_fasttask(
            container_fasttask_argv(run_entrypoint, container["args"], container_env(container, objects))
        )
        if args.command != "worker":
            continue
        checked += 1
        name = workload["metadata"]["name"]
        ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
        assert args.metrics_port is not None and ports.get("metrics") == args.metrics_port, name
        assert "readinessProbe" not in container, name
        for kind in ("startupProbe", "livenessProbe"):
            probe = container[kind]
            assert probe["httpGet"]["port"] in ("metrics", args.metrics_port), f"{name} {kind}"
            assert probe["timeoutSeconds"] >= 2
        startup = container["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        gpu = "nvidia.com/gpu" in container["resources"]["limits"]
        assert budget >= (600 if gpu else 300), f"{name}: {budget} s to import the app and its model code"
    assert checked >= 1


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_scratch_volumes_are_bounded(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    """Every emptyDir has a sizeLimit (the kubelet evicts the pod past it instead of letting it fill the node);
    the /tmp that uploads and file parameters spool to holds at least two of the largest files."""
    objects = rendered[kustomization]
    max_file = ftapi_settings(one(objects, "ConfigMap", "fasttask-config")["data"]).max_file_mb * 1024**2
    for workload in workloads(objects):
        volumes = {volume["name"]: volume for volume in pod_spec(workload).get("volumes", [])}
        for volume in volumes.values():
            if "emptyDir" in volume:
                assert "sizeLimit" in volume["emptyDir"], f"{workload['metadata']['name']}: {volume['name']}"
        for container in pod_spec(workload)["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["mountPath"] == "/tmp":
                    limit = byte_size(volumes[mount["name"]]["emptyDir"]["sizeLimit"])
                    assert limit >= 2 * max_file, f"{workload['metadata']['name']}: /tmp of {limit} bytes"


def test_gpu_workers_have_a_model_cache_and_shared_memory(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["overlays/gpu-pools"]
    gpu = one(objects, "Deployment", "fasttask-worker-gpu")
    (worker,) = [c for c in pod_spec(gpu)["containers"] if c["name"] != SIDECAR]
    volumes = {volume["name"]: volume for volume in pod_spec(gpu)["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in worker["volumeMounts"]}
    hf_home = container_env(worker, objects)["HF_HOME"]
    (cache,) = [volume for path, volume in mounts.items() if hf_home.startswith(path.rstrip("/") + "/")]
    assert "emptyDir" in cache or "persistentVolumeClaim" in cache, "HF_HOME is on a writable volume"
    shm = mounts["/dev/shm"]["emptyDir"]
    assert shm["medium"] == "Memory"
    assert byte_size(shm["sizeLimit"]) < byte_size(worker["resources"]["limits"]["memory"]), "it counts as memory"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_worker_pods_keep_their_deletion_cost_with_a_token_of_their_own(
    rendered: dict[str, list[Obj]], kustomization: str
) -> None:
    """Each worker pod runs the image's deletion-cost keeper; only that container gets the service account's
    token, and the account may get and patch pods, nothing else."""
    objects = rendered[kustomization]
    image = pod_spec(one(objects, "Deployment", "fasttask-api"))["containers"][0]["image"]
    account_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    worker_deployments = {
        workload["metadata"]["name"]: workload
        for workload, container in fasttask_containers(objects)
        if container["args"][0] == "worker"
    }
    assert worker_deployments
    for name, workload in worker_deployments.items():
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False, f"{name}: the worker runs tasks; it gets no token"
        (sidecar,) = [c for c in spec["containers"] if c["name"] == SIDECAR]
        assert sidecar["image"] == image and sidecar["args"] == ["fasttask-pod-deletion-cost"]
        sources = {item["name"]: item.get("valueFrom", {}) for item in sidecar["env"]}
        assert sources["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert sources["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        assert sources["FTAPI_REDIS_URL"]["configMapKeyRef"] == {"name": "fasttask-config", "key": "FTAPI_REDIS_URL"}
        for container in spec["containers"]:
            token_mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == account_dir]
            assert bool(token_mounts) == (container is sidecar), f"{name}/{container['name']}"
        (mount,) = [m for m in sidecar["volumeMounts"] if m["mountPath"] == account_dir]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        projected = [next(iter(source)) for source in volume["projected"]["sources"]]
        assert {"serviceAccountToken", "configMap"} <= set(projected) and mount["readOnly"] is True
        account = one(objects, "ServiceAccount", spec["serviceAccountName"])
        assert account["automountServiceAccountToken"] is False
        bindings = [
            b
            for b in find(objects, "RoleBinding")
            if {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "fasttask"} in b["subjects"]
        ]
        (binding,) = bindings
        role = one(objects, "Role", binding["roleRef"]["name"])
        assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]
    copies = [i.value for i in final_stage(dockerfile()) if i.keyword == "COPY" and "pod_deletion_cost.py" in i.value]
    assert [shlex.split(value)[-1] for value in copies] == ["/usr/local/bin/fasttask-pod-deletion-cost"]
    assert all("--chmod=0755" in value for value in copies)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")
_UNITS = {
    **{unit: 1000**i for i, unit in enumerate(["", "k", "m", "g", "t"])},  # Redis: 1k = 1000, 1kb = 1024
    **{unit + "b": 1024**i for i, unit in enumerate(["", "k", "m", "g", "t"]) if unit},
    **{unit + "i": 1024**i for i, unit in enumerate(["", "k", "m", "g", "t"]) if unit},  # Kubernetes: Ki, Mi, Gi
}


def byte_size(text: str) -> float:
    """Bytes in a Redis (768mb), Kubernetes (2Gi, 2G) or compose (1g) size. A bare lower-case k, m, g counts
    as binary, as compose reads it (Redis reads 1g as 10^9 bytes: counting more only makes checks stricter)."""
    match = _SIZE.fullmatch(str(text).strip())
    assert match, f"not a size: {text!r}"
    unit = match.group(2).lower()
    if unit in ("k", "m", "g", "t") and str(text).strip()[-1] in "kmgt":
        unit += "b"  # compose's 1g is a gibibyte
    assert unit in _UNITS, f"unknown unit in {text!r}"
    return float(match.group(1)) * _UNITS[unit]


def test_redis_is_durable_and_is_what_fasttask_connects_to(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["base"]
    redis = one(objects, "StatefulSet", "fasttask-redis")
    (container,) = pod_spec(redis)["containers"]
    args = container["args"]
    option = {args[i]: args[i + 1] for i in range(0, len(args), 2)}
    assert option["--appendonly"] == "yes" and option["--maxmemory-policy"] == "noeviction"
    limit = byte_size(container["resources"]["limits"]["memory"])
    assert 0 < byte_size(option["--maxmemory"]) <= 0.8 * limit, "noeviction needs a maxmemory below the pod's limit"
    claims = {claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]}
    assert any(m["mountPath"] == option["--dir"] and m["name"] in claims for m in container["volumeMounts"])
    url = urlsplit(ftapi_settings(one(objects, "ConfigMap", "fasttask-config")["data"]).redis_url or "")
    service = one(objects, "Service", url.hostname or "")
    assert selects(service["spec"]["selector"], redis)
    assert [port["port"] for port in service["spec"]["ports"]] == [url.port]
    assert redis["spec"]["serviceName"] in {s["metadata"]["name"] for s in find(objects, "Service")}


def pool_value_locations(scaler: Obj) -> dict[str, tuple[str, str]]:
    """trigger name -> (endpoint, "queued" | "running") it reads from GET /queues."""
    result = {}
    for trigger in scaler["spec"]["triggers"]:
        assert trigger["type"] == "metrics-api", "queue-length triggers do not see running jobs"
        match = re.fullmatch(
            r'queues\.#\(endpoint=="([^"]+)"\)\.(queued|running)', trigger["metadata"]["valueLocation"]
        )
        assert match, trigger["metadata"]["valueLocation"]
        result[trigger["name"]] = (match.group(1), match.group(2))
    return result


@pytest.mark.parametrize("kustomization", ["overlays/keda", "overlays/gpu-pools"])
def test_each_pool_scales_on_queued_plus_running_jobs_of_its_endpoints(
    rendered: dict[str, list[Obj]],
    kustomization: str,
    run_entrypoint: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safe choice against scaling a busy pool to zero: every pool counts the jobs that run, not just the
    ones that wait, so it stays active (and at least as large as the number of running jobs)."""
    objects = rendered[kustomization]
    app = app_of(objects, run_entrypoint, monkeypatch)
    worker_pools = pools(objects, run_entrypoint)
    scalers = find(objects, "ScaledObject")
    assert sorted(s["spec"]["scaleTargetRef"]["name"] for s in scalers) == sorted(worker_pools), "one per pool"
    api_service = one(objects, "Service", "fasttask-api")
    namespace = api_service["metadata"]["namespace"]
    served: list[str] = []
    for scaler in scalers:
        spec = scaler["spec"]
        endpoints = worker_pools[spec["scaleTargetRef"]["name"]] or sorted(app.tasks)
        served += endpoints
        locations = pool_value_locations(scaler)
        assert sorted(locations.values()) == sorted((e, f) for e in endpoints for f in ("queued", "running"))
        modifiers = spec["advanced"]["scalingModifiers"]
        assert re.fullmatch(r"\w+( \+ \w+)*", modifiers["formula"])
        assert sorted(modifiers["formula"].split(" + ")) == sorted(locations), "the formula sums every trigger"
        assert modifiers.get("metricType", "AverageValue") == "AverageValue" and float(modifiers["target"]) > 0
        assert float(modifiers.get("activationTarget", "0")) == 0, "active while any job is queued or running"
        assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
        assert spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            url = urlsplit(trigger["metadata"]["url"])
            assert url.hostname == f"{api_service['metadata']['name']}.{namespace}.svc.cluster.local"
            assert url.port == api_service["spec"]["ports"][0]["port"] and url.path == "/queues"
            assert trigger["metadata"].get("format", "json") == "json"
    assert sorted(served) == sorted({path for e in worker_pools.values() for path in e or app.tasks})
    assert any(s["spec"].get("minReplicaCount", 0) == 0 for s in scalers) == (kustomization == "overlays/gpu-pools")


@pytest.mark.parametrize("kustomization", ["overlays/keda", "overlays/gpu-pools"])
def test_keda_reads_numbers_from_a_real_queues_answer_with_the_api_key(
    rendered: dict[str, list[Obj]],
    kustomization: str,
    run_entrypoint: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = rendered[kustomization]
    stand_in = app_of(objects, run_entrypoint, monkeypatch)
    app = FastTaskAPI(title="keda", queue="local", api_key="s3cret")
    for path in stand_in.tasks:
        app.task_endpoint(path)(lambda: None)
    with TestClient(app) as client:
        for scaler in find(objects, "ScaledObject"):
            for trigger in scaler["spec"]["triggers"]:
                metadata = trigger["metadata"]
                assert (metadata["authMode"], metadata["method"]) == ("apiKey", "header")
                auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
                (ref,) = [r for r in auth["spec"]["secretTargetRef"] if r["parameter"] == "apiKey"]
                assert ref["key"] == "FTAPI_API_KEY" and ftapi_settings({ref["key"]: "x"}).api_key == "x"
                path = urlsplit(metadata["url"]).path
                assert client.get(path).status_code == 401
                answer = client.get(path, headers={metadata["keyParamName"]: "s3cret"})
                assert answer.status_code == 200
                assert gjson(answer.json(), metadata["valueLocation"]) == 0


MONITORING = DEPLOY / "k8s" / "monitoring"
SCRAPE_CONFIGS = DEPLOY / "prometheus" / "fasttask-scrape-configs.yml"


def test_monitoring_folder_holds_only_kubernetes_objects_that_find_the_pods(rendered: dict[str, list[Obj]]) -> None:
    """`kubectl apply -f deploy/k8s/monitoring/` applies every YAML file of the folder: each must be a Kubernetes
    object (no kustomization, no patch, no Prometheus configuration), in fasttask's namespace, and the
    PodMonitors must select pods that have the ports they scrape."""
    objects = rendered["overlays/gpu-pools"]
    files = sorted(path for path in MONITORING.iterdir() if path.suffix in (".yaml", ".yml", ".json"))
    assert files and not (MONITORING / "kustomization.yaml").exists()
    monitors = []
    for path in files:
        for document in load_yaml_documents(path):
            assert isinstance(document, dict), f"{path.name} holds something that is not a Kubernetes object"
            assert {"apiVersion", "kind", "metadata"} <= set(document), f"{path.name}: not a Kubernetes object"
            assert document["metadata"].get("namespace") == "fasttask", f"{path.name}: {document['metadata']}"
            if document["kind"] == "PodMonitor":
                monitors.append(document)
    assert len(monitors) == 2
    for monitor in monitors:
        selector = monitor["spec"]["selector"]
        chosen = []
        for workload in workloads(objects):
            labels = workload["spec"]["template"]["metadata"]["labels"]
            if not selects(selector.get("matchLabels", {}), workload):
                continue
            if all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])):
                chosen.append(workload)
        assert chosen, f"PodMonitor {monitor['metadata']['name']} selects no pods"
        for workload in chosen:
            names = {port.get("name") for c in pod_spec(workload)["containers"] for port in c.get("ports", [])}
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in names, f"{workload['metadata']['name']} has no port {endpoint['port']}"


def test_scrape_configs_without_the_operator_find_the_named_ports(rendered: dict[str, list[Obj]]) -> None:
    jobs = yaml.safe_load(SCRAPE_CONFIGS.read_text())
    assert isinstance(jobs, list) and {job["job_name"] for job in jobs} == {"fasttask-api", "fasttask-workers"}
    objects = rendered["overlays/gpu-pools"]
    port_names = {
        port.get("name") for w in workloads(objects) for c in pod_spec(w)["containers"] for port in c.get("ports", [])
    }
    for job in jobs:
        assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["fasttask"]
        (port_rule,) = [
            r for r in job["relabel_configs"] if r["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
        ]
        assert port_rule["regex"] in port_names


def test_hpa_counts_queued_and_started_jobs_of_the_pool_queue(
    rendered: dict[str, list[Obj]], run_entrypoint: Callable[..., Any]
) -> None:
    objects = rendered["overlays/hpa"]
    assert not find(objects, "ScaledObject"), "the HPA overlay works without KEDA"
    (hpa,) = find(objects, "HorizontalPodAutoscaler")
    endpoints = pools(objects, run_entrypoint)[hpa["spec"]["scaleTargetRef"]["name"]]
    assert endpoints is not None and len(endpoints) == 1
    (metric,) = hpa["spec"]["metrics"]
    selector = metric["external"]["metric"]["selector"]
    assert selector["matchLabels"] == {"queue": queue_name(endpoints[0])}
    (statuses,) = selector["matchExpressions"]
    assert statuses["key"] == "status" and statuses["operator"] == "In"
    assert sorted(statuses["values"]) == ["queued", "started"], "RQ's names of waiting and running jobs"
    assert metric["external"]["target"]["type"] == "AverageValue" and hpa["spec"]["minReplicas"] >= 1
    exporter = one(objects, "Deployment", "fasttask-rq-exporter")
    (container,) = pod_spec(exporter)["containers"]
    (url,) = [item for item in container["env"] if item["name"] == "RQ_REDIS_URL"]
    assert url["valueFrom"]["configMapKeyRef"] == {"name": "fasttask-config", "key": "FTAPI_REDIS_URL"}


# -- docker compose ---------------------------------------------------------------------------------------------


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(node: Any, env: dict[str, str], missing: set[str], required: set[str] | None = None) -> Any:
    """docker compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR:?error} (compose refuses to
    start when VAR is empty: collected in `required`), $VAR, and $$ for a literal $."""
    if isinstance(node, dict):
        return {key: interpolate(value, env, missing, required) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env, missing, required) for item in node]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        if env.get(name):
            return env[name]
        if match.group(2) is None:
            missing.add(name)
            return ""
        if match.group(2).endswith("?"):
            if required is not None:
                required.add(name)
            return ""
        return match.group(3)

    return _INTERPOLATION.sub(substitute, node)


COMPOSE_SECRETS = {"FTAPI_API_KEY": "compose-test-" + "ab" * 16, "AWS_SECRET_ACCESS_KEY": "cd" * 12}
"""What the operator adds to .env.example (the README's sed line): the two secrets compose requires."""


def compose_env() -> dict[str, str]:
    """.env as the compose README makes it: .env.example with the secrets filled in."""
    return {**env_file(COMPOSE_DIR / ".env.example"), **COMPOSE_SECRETS}


def load_compose(env: dict[str, str]) -> tuple[dict[str, Any], set[str]]:
    """docker-compose.yml as compose reads it with this .env, and the required variables left empty."""
    missing: set[str] = set()
    required: set[str] = set()
    raw = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())  # anchors and merge keys resolved
    document: dict[str, Any] = interpolate(raw, env, missing, required)
    assert not missing, f"docker-compose.yml uses {sorted(missing)}, which .env.example does not set"
    return document, required


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document, required = load_compose(compose_env())
    assert not required
    return document


def test_compose_refuses_to_start_without_secrets_and_publishes_on_loopback(compose: dict[str, Any]) -> None:
    """Secure by default: with .env.example as it is, compose refuses to start (both secrets are empty), no
    secret has a usable value in the repository, and the API is reachable from this host only."""
    _, required = load_compose(env_file(COMPOSE_DIR / ".env.example"))
    assert required == set(COMPOSE_SECRETS), f"compose must refuse to start without {sorted(COMPOSE_SECRETS)}"
    example = env_file(COMPOSE_DIR / ".env.example")
    assert all(not example[name] for name in COMPOSE_SECRETS), "no usable secret in .env.example"
    api = compose["services"]["api"]
    assert api["environment"]["FTAPI_API_KEY"] == COMPOSE_SECRETS["FTAPI_API_KEY"]
    assert ftapi_settings({**example, **api["environment"]}).api_key == COMPOSE_SECRETS["FTAPI_API_KEY"]
    for service in compose["services"].values():
        for published in service.get("ports", []):
            address = published.rsplit(":", 2)[0] if published.count(":") == 2 else "0.0.0.0"
            assert address == "127.0.0.1", f"{published} is published beyond this host by default"


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    from compose_spec import PyCompose

    try:
        PyCompose.from_json(json.dumps(compose))
    except Exception as exc:  # the binding raises plain exceptions with the path of the error
        pytest.fail(f"docker-compose.yml: {exc}")


def test_compose_redis_and_the_store_keep_their_data(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], compose["volumes"]
    redis = services["redis"]
    command = redis["command"]
    assert command[0] == "redis-server" and command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = byte_size(command[command.index("--maxmemory") + 1])
    assert 0 < maxmemory <= 0.8 * byte_size(redis["mem_limit"]), "noeviction needs a maxmemory below the limit"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name, path in (("redis", "/data"), ("s3", "/data")):
        (mount,) = services[name]["volumes"]
        volume, _, target = mount.partition(":")
        assert volume in volumes and target == path, f"{name} keeps its data in a named volume"


MAINTAINED_S3_IMAGES = ("chrislusf/seaweedfs:",)
"""S3-compatible servers whose images are still published (MinIO's community images stopped in 2025)."""


def test_compose_store_is_a_maintained_s3_server_with_the_env_credentials(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """SeaweedFS, started by the service's own command with a stand-in `weed` that shows what it was given: an
    S3 identity with exactly the credentials of .env (the ones fasttask uses), its data under the volume, and
    the S3 port that FTAPI_S3_ENDPOINT_URL and the published port name."""
    store = compose["services"]["s3"]
    assert store["image"].startswith(MAINTAINED_S3_IMAGES) and not store["image"].endswith(":latest")
    assert not any("minio" in str(service.get("image", "")) for service in compose["services"].values())
    assert store["healthcheck"]["test"][0] == "CMD"
    assert store["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = store["command"]
    config = tmp_path / "s3.json"
    stub = tmp_path / "bin" / "weed"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done > "$WEED_ARGS"\n')
    stub.chmod(0o755)
    done = subprocess.run(
        ["/bin/sh", "-c", script.replace("/tmp/s3.json", str(config))],
        env={**store["environment"], "PATH": f"{stub.parent}:/usr/bin:/bin", "WEED_ARGS": str(tmp_path / "args")},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 0, done.stderr
    example = compose_env()
    (identity,) = json.loads(config.read_text())["identities"]
    assert identity["credentials"] == [
        {"accessKey": example["AWS_ACCESS_KEY_ID"], "secretKey": example["AWS_SECRET_ACCESS_KEY"]}
    ]
    assert {"Read", "Write", "List"} <= set(identity["actions"])
    assert config.stat().st_mode & 0o077 == 0, "the credentials file is readable by its owner only"
    args = (tmp_path / "args").read_text().split()
    assert args[0] == "server" and "-s3" in args and "-dir=/data" in args and f"-s3.config={config}" in args
    s3_port = next(a.partition("=")[2] for a in args if a.startswith("-s3.port="))
    endpoint = urlsplit(ftapi_settings(example).s3_endpoint_url or "")
    assert (endpoint.hostname, str(endpoint.port)) == ("s3", s3_port)
    (published,) = store["ports"]
    assert published.rpartition(":")[2] == s3_port


def test_compose_bucket_is_made_by_the_images_own_command(
    compose: dict[str, Any], s3_endpoint: str, tmp_path: Path
) -> None:
    """s3-init runs the image's fasttask-make-bucket (through its entrypoint) before the API and workers: against
    a real S3 server it creates the bucket, finds it the second time, and fails with a message when no store
    answers."""
    init = compose["services"]["s3-init"]
    api = compose["services"]["api"]
    assert init["image"] == api["image"] and init["build"] == api["build"]
    assert init["depends_on"] == {"s3": {"condition": "service_healthy"}}
    assert init["restart"] == "no" and init["env_file"] == ".env"
    copies = [i.value for i in final_stage(dockerfile()) if i.keyword == "COPY" and "make_bucket.py" in i.value]
    assert [shlex.split(value)[-1] for value in copies] == ["/usr/local/bin/fasttask-make-bucket"]
    extras = init["build"]["args"]["EXTRAS"].split(",")
    assert "all" in extras or "s3" in extras, "the image has boto3"
    from tests.support.servers import S3_CREDENTIALS

    bin_dir = tmp_path / "bin"  # the image's /usr/local/bin
    bin_dir.mkdir()
    (bin_dir / "fasttask-make-bucket").symlink_to(DEPLOY / "docker" / "make_bucket.py")
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("FTAPI_", "AWS_"))},
        **compose_env(),
        **S3_CREDENTIALS,  # the test server's, in place of the store's
        "FTAPI_S3_ENDPOINT_URL": s3_endpoint,
        "FTAPI_S3_BUCKET": f"compose-{os.urandom(3).hex()}",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(bin_dir), os.environ["PATH"]]),
    }

    def make(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", str(ENTRYPOINT), *init["command"]],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    first, second = make({}), make({})
    assert first.returncode == 0 and "created" in first.stdout, first.stderr
    assert second.returncode == 0 and "exists" in second.stdout, second.stderr
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        **{
            "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": "us-east-1",
        },
    )
    assert env["FTAPI_S3_BUCKET"] in {b["Name"] for b in client.list_buckets()["Buckets"]}
    nothing = make({"FTAPI_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "MAKE_BUCKET_WAIT_S": "0"})
    assert nothing.returncode != 0 and "no S3 store at" in nothing.stderr


def test_compose_api_and_workers_run_fasttask(
    compose: dict[str, Any], run_entrypoint: Callable[..., Any], stop_escalation_s: float
) -> None:
    services = compose["services"]
    example = compose_env()
    settings = ftapi_settings(example)
    api, worker = services["api"], services["worker"]
    for service in (api, worker):
        assert (COMPOSE_DIR / service["build"]["context"]).resolve() == ROOT
        assert (ROOT / service["build"]["dockerfile"]).is_file()
        assert set(service["build"]["args"]) <= set(build_args(dockerfile()))
        assert service["env_file"] == ".env" and service["image"] == api["image"]
        assert service["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "s3-init": {"condition": "service_completed_successfully"},
        }
    entrypoint = json.loads(only(final_stage(dockerfile()), "ENTRYPOINT").value)
    assert entrypoint[0].endswith("tini") and "-s" not in entrypoint
    for service in (api, worker):
        assert not service.get("init"), "the image's tini is PID 1: a second init (init: true) leaves it as a child"
    serve = parse_fasttask(container_fasttask_argv(run_entrypoint, api["command"], example))
    work = parse_fasttask(container_fasttask_argv(run_entrypoint, worker["command"], example))
    assert (serve.command, work.command) == ("serve", "worker")
    (published,) = api["ports"]
    assert published.rpartition(":")[2] == str(serve.port or settings.port)
    assert "healthcheck" not in api, "the image's HEALTHCHECK on /health applies"
    # `docker compose up --scale worker=N` needs workers without a fixed name or host port
    assert not {"container_name", "ports", "hostname"} & set(worker)
    assert worker["healthcheck"] == {"disable": True}
    grace = work.grace if work.grace is not None else settings.worker_grace_s
    seconds = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert seconds and int(seconds.group(1)) >= grace + stop_escalation_s + TERMINATION_MARGIN_S


def test_compose_env_example_configures_a_valid_distributed_fasttask(compose: dict[str, Any]) -> None:
    example = compose_env()
    check_env_names(example, "deploy/compose/.env.example")
    settings = ftapi_settings(example)
    assert settings.queue == "redis" and settings.host == "0.0.0.0"
    redis_url = urlsplit(settings.redis_url or "")
    assert redis_url.hostname in compose["services"] and redis_url.port == 6379
    assert urlsplit(settings.s3_endpoint_url or "").hostname in compose["services"]
    assert settings.s3_bucket and example["AWS_ACCESS_KEY_ID"]
    raw = (COMPOSE_DIR / "docker-compose.yml").read_text()
    environments = {name for service in compose["services"].values() for name in service.get("environment", {})}
    read = set(re.findall(r"\$\$\{?(\w+)", raw))
    assert read <= set(example) | environments, "variables the containers read are in .env or their environment"


def test_the_compose_smoke_example_hashes_the_file_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/checksum.py, the app scripts/compose-smoke sends a file through the stack with."""
    import hashlib

    monkeypatch.chdir(ROOT)
    app = load_app("examples.checksum:app")
    data = os.urandom(70_000)
    with TestClient(app) as client:
        job = client.post("/checksum", files={"file": ("blob.bin", data, "application/octet-stream")})
        assert job.status_code == 202, job.text
        done = client.get(f"/jobs/{job.json()['id']}", params={"wait": 10}).json()
    assert done["status"] == "finished"
    assert done["result"] == {"name": "blob.bin", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_compose_readme_gives_the_three_commands() -> None:
    readme = (COMPOSE_DIR / "README.md").read_text()
    for command in ("cp .env.example .env", "docker compose up -d --build", "docker compose up -d --scale worker="):
        assert command in readme
    # the README's line that fills in the secrets gives every required one a value
    (fill,) = [line for line in readme.splitlines() if line.startswith("sed -i")]
    for name in COMPOSE_SECRETS:
        assert f"s/^{name}=.*/{name}=$(openssl rand -hex" in fill


# -- the manifests' commands, run as plain processes ------------------------------------------------------------


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class KubernetesAPIStandIn(http.server.ThreadingHTTPServer):
    """Records the pod patches a pod-deletion-cost container sends (there is no cluster here)."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, str], Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.patches.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def costs(self) -> list[str]:
        return [body["metadata"]["annotations"][DELETION_COST] for _, _, body in self.patches]


DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def with_option(args: list[str], option: str, value: str) -> list[str]:
    return [value if i and args[i - 1] == option else arg for i, arg in enumerate(args)]


def test_manifest_commands_serve_jobs_as_plain_processes(
    rendered: dict[str, list[Obj]], redis_url: str, tmp_path: Path
) -> None:
    """The API and worker containers of overlays/keda, started through the image's entrypoint with their own
    args and environment (only the Redis URL, host and ports made local), and the worker pod's deletion-cost
    keeper against a stand-in of the Kubernetes API: jobs run with the Secret's API key, GET /queues gives KEDA's
    triggers queued + running, the worker's probes answer on its metrics port, the pod's deletion cost is high
    while its worker has a job and low when idle, and SIGTERM lets a worker finish its job and exit 0."""
    objects = rendered["overlays/keda"]
    port, metrics_port = free_port(), free_port()
    local = {"FTAPI_REDIS_URL": redis_url, "FTAPI_HOST": "127.0.0.1", "FTAPI_PORT": str(port)}
    base_env = {key: value for key, value in os.environ.items() if not key.startswith("FTAPI_")}
    bin_dir = tmp_path / "bin"  # the image's /usr/local/bin
    bin_dir.mkdir()
    (bin_dir / "fasttask-pod-deletion-cost").symlink_to(SIDECAR_SCRIPT)
    base_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(bin_dir), base_env["PATH"]])
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("projected-token\n")
    kubernetes = KubernetesAPIStandIn()
    threading.Thread(target=kubernetes.serve_forever, daemon=True).start()
    pod = socket.gethostname()  # a pod's hostname is its name; the worker names itself after it
    processes: dict[str, subprocess.Popen[bytes]] = {}
    worker_pod = pod_spec(one(objects, "Deployment", "fasttask-worker"))
    try:
        for name in ("fasttask-api", "fasttask-worker"):
            (container, *_) = pod_spec(one(objects, "Deployment", name))["containers"]
            env = {**base_env, **container_env(container, objects), **local}
            args = with_option(container["args"], "--metrics-port", str(metrics_port))
            with (tmp_path / f"{name}.log").open("wb") as log:
                processes[name] = subprocess.Popen(
                    ["/bin/sh", str(ENTRYPOINT), *args], env=env, cwd=ROOT, stdout=log, stderr=log
                )
        (sidecar,) = [c for c in worker_pod["containers"] if c["name"] == SIDECAR]
        downward = {"metadata.name": pod, "metadata.namespace": "fasttask"}
        sidecar_env = {
            **base_env,
            **{
                item["name"]: downward[item["valueFrom"]["fieldRef"]["fieldPath"]]
                for item in sidecar["env"]
                if "fieldRef" in item.get("valueFrom", {})
            },
            "FTAPI_REDIS_URL": redis_url,
            "KUBERNETES_API_URL": f"http://127.0.0.1:{kubernetes.server_address[1]}",
            "SERVICE_ACCOUNT_DIR": str(account),
            "DELETION_COST_POLL_S": "0.05",
            "DELETION_COST_IDLE_AFTER_S": "0",
        }
        with (tmp_path / "sidecar.log").open("wb") as log:
            processes[SIDECAR] = subprocess.Popen(
                ["/bin/sh", str(ENTRYPOINT), *sidecar["args"]], env=sidecar_env, cwd=ROOT, stdout=log, stderr=log
            )
        key = secret_data(one(objects, "Secret", "fasttask-secrets"))["FTAPI_API_KEY"]
        (trigger, *_) = one(objects, "ScaledObject", "fasttask-worker")["spec"]["triggers"]
        headers = {trigger["metadata"]["keyParamName"]: key}
        locations = {
            t["name"]: t["metadata"]["valueLocation"]
            for t in one(objects, "ScaledObject", "fasttask-worker")["spec"]["triggers"]
        }
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_for(lambda: client.get("/ready").status_code == 200, 30, "the API to be ready")

            def load() -> tuple[float, list[Any]]:
                answer = client.get("/queues", headers=headers).json()
                values = {name: gjson(answer, path) for name, path in locations.items()}
                return sum(values.values()), answer["queues"][0]["workers"]

            wait_for(lambda: load()[1], 30, "the worker to register")
            (worker_container, *_) = worker_pod["containers"]
            for probe in ("startupProbe", "livenessProbe"):
                path = worker_container[probe]["httpGet"]["path"]
                assert httpx.get(f"http://127.0.0.1:{metrics_port}{path}", timeout=5).status_code == 200, probe
            wait_for(lambda: kubernetes.costs() == ["0"], 10, "the idle pod's deletion cost")
            job = client.post("/make_fries", json={"fries_name": "k8s"}, headers=headers)
            assert job.status_code == 202, job.text
            wait_for(lambda: load()[0] >= 1, 10, "KEDA's queued + running to count the job")
            wait_for(lambda: "1000" in kubernetes.costs(), 10, "the busy pod's deletion cost")
            done = client.get(f"/jobs/{job.json()['id']}", params={"wait": 20}, headers=headers).json()
            assert done["status"] == "finished" and done["result"] == "1 x k8s, golden"
            assert load()[0] == 0
            wait_for(lambda: kubernetes.costs()[-1] == "0", 10, "the pod's deletion cost once idle again")
            path, sent, _ = kubernetes.patches[-1]
            assert path == f"/api/v1/namespaces/fasttask/pods/{pod}"
            assert sent["Authorization"] == "Bearer projected-token"
            assert sent["Content-Type"] == "application/merge-patch+json"
            # SIGTERM mid-job: the worker finishes the job, then exits 0
            job = client.post("/make_fries", json={"fries_name": "last"}, headers=headers).json()
            wait_for(lambda: client.get(f"/jobs/{job['id']}", headers=headers).json()["status"] == "running", 10, "run")
            processes["fasttask-worker"].send_signal(signal.SIGTERM)
            assert processes["fasttask-worker"].wait(timeout=20) == 0
            done = client.get(f"/jobs/{job['id']}", params={"wait": 5}, headers=headers).json()
            assert done["status"] == "finished"
        processes[SIDECAR].send_signal(signal.SIGTERM)
        assert processes[SIDECAR].wait(timeout=10) == 0
    finally:
        kubernetes.shutdown()
        kubernetes.server_close()
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def test_deletion_cost_is_high_at_once_and_low_only_after_a_quiet_spell() -> None:
    """Between jobs that follow each other closely, the pod keeps its busy cost (each change is an API write)."""
    module = load_sidecar()
    cost = module.Cost(idle_after_s=30)
    assert cost.wanted(False, now=0) == module.IDLE_COST, "a new, idle pod is cheap at once"
    cost.reported = module.IDLE_COST
    assert cost.wanted(True, now=1) == module.BUSY_COST
    cost.reported = module.BUSY_COST
    assert cost.wanted(False, now=2) == module.BUSY_COST
    assert cost.wanted(False, now=31) == module.BUSY_COST
    assert cost.wanted(True, now=31.5) == module.BUSY_COST
    assert cost.wanted(False, now=32) == module.BUSY_COST
    assert cost.wanted(False, now=62) == module.IDLE_COST
    assert module.BUSY_COST > module.IDLE_COST
    from fasttask.redis import keys

    assert keys.workers_set_key() == module.WORKERS_SET
    assert module.WORKER_KEY.format("w") == keys.worker_key("w")
    assert module.ANNOTATION == DELETION_COST


def load_sidecar() -> Any:
    spec = importlib.util.spec_from_file_location("pod_deletion_cost", SIDECAR_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- docs -------------------------------------------------------------------------------------------------------


OPERATOR_FILES = {f"deploy/k8s/{SECRETS_ENV}", "deploy/compose/.env"}
"""Files the docs tell operators to write; git ignores them."""


def test_deploy_docs_name_files_and_flags_that_exist() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for path in set(re.findall(r"`((?:deploy|scripts|docs)/[\w./-]+)`", docs)) - OPERATOR_FILES:
        assert (ROOT / path.rstrip("/")).exists(), f"docs/deploy.md names {path}, which does not exist"
    help_text = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cluster"), "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    for flag in set(re.findall(r"scripts/cluster[^`\n]*", docs)):
        for option in re.findall(r"--[\w-]+", flag):
            assert option in help_text, f"docs/deploy.md uses scripts/cluster {option}, which it does not take"
    for command, rest in re.findall(r"fasttask (serve|worker)([^`\n|]*)", docs):
        for option in re.findall(r"(?<![\w-])(--[\w-]+)", rest):
            assert option in cli_options(command), f"docs/deploy.md uses fasttask {command} {option}"
    check_env_names(re.findall(r"FTAPI_\w+", docs), "docs/deploy.md")
