"""The deployment files (Dockerfile, deploy/compose, deploy/k8s) checked offline, against fasttask itself.

No container engine and no cluster are needed: the Kubernetes objects are validated against the Kubernetes
OpenAPI schemas that `kubernetes-validate` ships, the KEDA objects against deploy_keda_schema, the compose
file against the compose specification (`compose-spec`), and every command, flag, setting, port and probe
path they use against the CLI parser, `Settings` and the routes of a built app. The image's entrypoint runs
for real, with the manifests' own arguments, as plain processes on a real Redis.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
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

from .conftest import LiveServer, free_port
from .deploy_keda_schema import SCHEMAS as KEDA_SCHEMAS
from .deploy_kustomize import render

ROOT = Path(__file__).resolve().parent.parent
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
    python = build_args(instructions)["PYTHON_VERSION"]
    assert tuple(int(part) for part in python.split(".")) >= (3, 10), "fasttask needs Python >= 3.10"
    final = final_stage(instructions)
    base = final[0].value.split()[0]
    assert base.startswith("python:") and base.endswith("-slim"), base
    uid, _, gid = only(final, "USER").value.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), "numeric non-root user (runAsNonRoot)"
    assert any(
        instruction.keyword == "COPY" and "--from=" in instruction.value and "/opt/venv" in instruction.value
        for instruction in final
    ), "the final stage takes the built virtualenv from the build stage"


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


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render(DEPLOY / "k8s" / name) for name in KUSTOMIZATIONS}


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
            env.update(one(objects, "Secret", source["secretRef"]["name"]).get("stringData", {}))
    env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    return env


def fasttask_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, container) of every container that runs the fasttask image."""
    image = pod_spec(one(objects, "Deployment", "fasttask-api"))["containers"][0]["image"]
    for workload in workloads(objects):
        for container in pod_spec(workload)["containers"]:
            if container["image"] == image:
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


def test_kustomizations_render_like_kubectl(rendered: dict[str, list[Obj]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Python rendering is checked by every other test")
    for name, objects in rendered.items():
        output = subprocess.run(
            [kubectl, "kustomize", str(DEPLOY / "k8s" / name)], capture_output=True, text=True, timeout=60, check=True
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
                    assert ref["key"] in one(objects, "Secret", ref["name"])["stringData"]
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
        check_env_names(secret["stringData"], f"Secret {secret['metadata']['name']}")
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


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_api_is_redundant_and_workers_outlive_their_grace_period(
    rendered: dict[str, list[Obj]], kustomization: str, run_entrypoint: Callable[..., Any]
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
        assert termination >= grace + 10, f"{workload['metadata']['name']}: {termination} s for a {grace} s grace"
        assert "replicas" not in workload["spec"], "an autoscaler owns the worker count"
        assert not any(probe in container for probe in ("readinessProbe", "livenessProbe")), "workers serve no HTTP"


def test_redis_is_durable_and_is_what_fasttask_connects_to(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["base"]
    redis = one(objects, "StatefulSet", "fasttask-redis")
    (container,) = pod_spec(redis)["containers"]
    args = container["args"]
    option = {args[i]: args[i + 1] for i in range(0, len(args), 2)}
    assert option["--appendonly"] == "yes" and option["--maxmemory-policy"] == "noeviction"
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


_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def interpolate(node: Any, env: dict[str, str], missing: set[str]) -> Any:
    """docker compose's variable substitution: ${VAR}, ${VAR:-default}, $VAR, and $$ for a literal $."""
    if isinstance(node, dict):
        return {key: interpolate(value, env, missing) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env, missing) for item in node]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(3)
        if env.get(name):
            return env[name]
        if match.group(2) is None:
            missing.add(name)
            return ""
        return match.group(2)

    return _INTERPOLATION.sub(substitute, node)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    missing: set[str] = set()
    raw = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())  # anchors and merge keys resolved
    document: dict[str, Any] = interpolate(raw, env_file(COMPOSE_DIR / ".env.example"), missing)
    assert not missing, f"docker-compose.yml uses {sorted(missing)}, which .env.example does not set"
    return document


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    from compose_spec import PyCompose

    try:
        PyCompose.from_json(json.dumps(compose))
    except Exception as exc:  # the binding raises plain exceptions with the path of the error
        pytest.fail(f"docker-compose.yml: {exc}")


def test_compose_redis_and_minio_keep_their_data(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], compose["volumes"]
    redis = services["redis"]
    command = redis["command"]
    assert command[0] == "redis-server" and command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name, path in (("redis", "/data"), ("minio", "/data")):
        (mount,) = services[name]["volumes"]
        volume, _, target = mount.partition(":")
        assert volume in volumes and target == path, f"{name} keeps its data in a named volume"
    minio = services["minio"]
    assert minio["command"][:2] == ["server", "/data"] and "healthcheck" in minio
    init = services["minio-init"]
    assert init["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert init["restart"] == "no" and init["env_file"] == ".env"
    script = " ".join(init["entrypoint"])
    assert 'mc mb --ignore-existing "local/$FTAPI_S3_BUCKET"' in script
    assert "$AWS_ACCESS_KEY_ID" in script and "$AWS_SECRET_ACCESS_KEY" in script
    example = env_file(COMPOSE_DIR / ".env.example")
    assert minio["environment"] == {
        "MINIO_ROOT_USER": example["AWS_ACCESS_KEY_ID"],
        "MINIO_ROOT_PASSWORD": example["AWS_SECRET_ACCESS_KEY"],
    }


def test_compose_api_and_workers_run_fasttask(compose: dict[str, Any], run_entrypoint: Callable[..., Any]) -> None:
    services = compose["services"]
    example = env_file(COMPOSE_DIR / ".env.example")
    settings = ftapi_settings(example)
    api, worker = services["api"], services["worker"]
    for service in (api, worker):
        assert (COMPOSE_DIR / service["build"]["context"]).resolve() == ROOT
        assert (ROOT / service["build"]["dockerfile"]).is_file()
        assert set(service["build"]["args"]) <= set(build_args(dockerfile()))
        assert service["env_file"] == ".env" and service["image"] == api["image"]
        assert service["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "minio-init": {"condition": "service_completed_successfully"},
        }
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
    assert seconds and int(seconds.group(1)) >= grace + 10


def test_compose_env_example_configures_a_valid_distributed_fasttask(compose: dict[str, Any]) -> None:
    example = env_file(COMPOSE_DIR / ".env.example")
    check_env_names(example, "deploy/compose/.env.example")
    settings = ftapi_settings(example)
    assert settings.queue == "redis" and settings.host == "0.0.0.0"
    redis_url = urlsplit(settings.redis_url or "")
    assert redis_url.hostname in compose["services"] and redis_url.port == 6379
    assert urlsplit(settings.s3_endpoint_url or "").hostname in compose["services"]
    assert settings.s3_bucket and example["AWS_ACCESS_KEY_ID"] and len(example["AWS_SECRET_ACCESS_KEY"]) >= 8
    assert settings.api_key is None, "the example starts open; the README says to set a key"
    raw = (COMPOSE_DIR / "docker-compose.yml").read_text()
    assert set(re.findall(r"\$\$\{?(\w+)", raw)) <= set(example), "variables the containers read are in .env"


def test_compose_readme_gives_the_three_commands() -> None:
    readme = (COMPOSE_DIR / "README.md").read_text()
    for command in ("cp .env.example .env", "docker compose up -d --build", "docker compose up -d --scale worker="):
        assert command in readme


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


def test_manifest_commands_serve_jobs_as_plain_processes(
    rendered: dict[str, list[Obj]], redis_url: str, tmp_path: Path
) -> None:
    """The API and worker containers of overlays/keda, started through the image's entrypoint with their own
    args and environment (only the Redis URL, host and port made local): jobs run with the Secret's API key,
    GET /queues gives KEDA's triggers queued + running, and SIGTERM lets a worker finish its job and exit 0."""
    objects = rendered["overlays/keda"]
    port = free_port()
    local = {"FTAPI_REDIS_URL": redis_url, "FTAPI_HOST": "127.0.0.1", "FTAPI_PORT": str(port)}
    base_env = {key: value for key, value in os.environ.items() if not key.startswith("FTAPI_")}
    base_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base_env['PATH']}"
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("fasttask-api", "fasttask-worker"):
            (container,) = pod_spec(one(objects, "Deployment", name))["containers"]
            env = {**base_env, **container_env(container, objects), **local}
            with (tmp_path / f"{name}.log").open("wb") as log:
                processes[name] = subprocess.Popen(
                    ["/bin/sh", str(ENTRYPOINT), *container["args"]], env=env, cwd=ROOT, stdout=log, stderr=log
                )
        key = one(objects, "Secret", "fasttask-secrets")["stringData"]["FTAPI_API_KEY"]
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
            job = client.post("/make_fries", json={"fries_name": "k8s"}, headers=headers)
            assert job.status_code == 202, job.text
            wait_for(lambda: load()[0] >= 1, 10, "KEDA's queued + running to count the job")
            done = client.get(f"/jobs/{job.json()['id']}", params={"wait": 20}, headers=headers).json()
            assert done["status"] == "finished" and done["result"] == "1 x k8s, golden"
            assert load()[0] == 0
            # SIGTERM mid-job: the worker finishes the job, then exits 0
            job = client.post("/make_fries", json={"fries_name": "last"}, headers=headers).json()
            wait_for(lambda: client.get(f"/jobs/{job['id']}", headers=headers).json()["status"] == "running", 10, "run")
            processes["fasttask-worker"].send_signal(signal.SIGTERM)
            assert processes["fasttask-worker"].wait(timeout=20) == 0
            done = client.get(f"/jobs/{job['id']}", params={"wait": 5}, headers=headers).json()
            assert done["status"] == "finished"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


# -- docs -------------------------------------------------------------------------------------------------------


def test_deploy_docs_name_files_and_flags_that_exist() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for path in set(re.findall(r"`((?:deploy|scripts|docs)/[\w./-]+)`", docs)):
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
