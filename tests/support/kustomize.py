"""Renders the kustomizations under deploy/k8s in Python, for tests on machines without kubectl or kustomize.

Only what fasttask's kustomizations use is implemented, and anything else is refused rather than ignored:
`resources` (files and directories), `namespace`, `images`, `patches` given by `path` (strategic merge
patches of objects named by their own apiVersion, kind and name) and `secretGenerator` from env files with
`generatorOptions.disableNameSuffixHash`. Where `kubectl` is installed, the tests compare this rendering with
`kubectl kustomize`.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "images",
    "patches",
    "secretGenerator",
    "generatorOptions",
}

CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
}

BUILT_IN_GROUPS = {
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "autoscaling/v2",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
}

# Lists that Kubernetes' strategic merge patch merges item by item, by this key (the rest are replaced whole).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


class KustomizeError(Exception):
    pass


def load_documents(path: Path) -> list[Obj]:
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def identity(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"]


def render(directory: Path) -> list[Obj]:
    """The objects `kustomize build directory` would print (order aside)."""
    file = directory / "kustomization.yaml"
    if not file.is_file():
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    (config,) = load_documents(file)
    unknown = set(config) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{file}: fields this renderer does not implement: {sorted(unknown)}")
    if config.get("kind") != "Kustomization":
        raise KustomizeError(f"{file}: not a Kustomization")
    objects: list[Obj] = []
    for entry in config.get("resources", []):
        target = (directory / entry).resolve()
        objects.extend(render(target) if target.is_dir() else load_documents(target))
    objects.extend(_generate_secrets(config, directory))
    for patch in config.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{file}: only patches with a path are implemented, not {patch}")
        for doc in load_documents(directory / patch["path"]):
            objects = _apply_patch(objects, doc)
    for image in config.get("images", []):
        for obj in objects:
            _set_images(obj, image)
    if "namespace" in config:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED_KINDS:
                obj.setdefault("metadata", {})["namespace"] = config["namespace"]
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        if identity(obj) in seen:
            raise KustomizeError(f"{directory}: {identity(obj)} is defined twice")
        seen.add(identity(obj))
    return objects


def _generate_secrets(config: Obj, directory: Path) -> list[Obj]:
    """Secrets made from env files (KEY=VALUE lines; blank lines and # comments skipped), as kustomize does.
    A missing env file is an error, as in kustomize: nothing renders without the operator's own secrets."""
    generators = config.get("secretGenerator", [])
    if not generators:
        return []
    options = config.get("generatorOptions", {})
    if options != {"disableNameSuffixHash": True}:
        raise KustomizeError("only generatorOptions {disableNameSuffixHash: true} is implemented")
    secrets = []
    for generator in generators:
        unknown = set(generator) - {"name", "envs", "type", "options"}
        if unknown or set(generator.get("options", {})) - {"labels"}:
            raise KustomizeError(f"secretGenerator fields this renderer does not implement: {generator}")
        data: dict[str, str] = {}
        for name in generator["envs"]:
            path = directory / name
            if not path.is_file():
                raise KustomizeError(f"secretGenerator {generator['name']}: {path} does not exist")
            for line in path.read_text().splitlines():
                line = line.lstrip()
                if not line or line.startswith("#"):
                    continue
                key, sep, value = line.partition("=")
                if not sep:
                    raise KustomizeError(f"{path}: {line!r} is not KEY=VALUE")
                data[key] = base64.b64encode(value.encode()).decode()
        metadata: Obj = {"name": generator["name"]}
        labels = generator.get("options", {}).get("labels")
        if labels:
            metadata["labels"] = dict(labels)
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata,
                "type": generator.get("type", "Opaque"),
                "data": data,
            }
        )
    return secrets


def _apply_patch(objects: list[Obj], patch: Obj) -> list[Obj]:
    matches = [
        obj
        for obj in objects
        if (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])
        == (patch["apiVersion"], patch["kind"], patch["metadata"]["name"])
    ]
    if len(matches) != 1:
        raise KustomizeError(f"patch {patch['kind']}/{patch['metadata']['name']} matches {len(matches)} objects")
    (target,) = matches
    if patch.get("$patch") == "delete":
        return [obj for obj in objects if obj is not target]
    merged = _merge(target, patch, strategic=target["apiVersion"] in BUILT_IN_GROUPS)
    return [merged if obj is target else obj for obj in objects]


def _merge(base: Any, patch: Any, strategic: bool, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        result = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            elif key in result:
                result[key] = _merge(result[key], value, strategic, key)
            else:
                result[key] = copy.deepcopy(value)
        return result
    if strategic and field in MERGE_KEYS and isinstance(base, list) and isinstance(patch, list):
        key = MERGE_KEYS[field]
        result_list = copy.deepcopy(base)
        for item in patch:
            existing = [i for i, old in enumerate(result_list) if old.get(key) == item.get(key)]
            if existing:
                result_list[existing[0]] = _merge(result_list[existing[0]], item, strategic)
            else:
                result_list.append(copy.deepcopy(item))
        return result_list
    return copy.deepcopy(patch)


def _set_images(node: Any, image: dict[str, str]) -> None:
    unknown = set(image) - {"name", "newName", "newTag"}
    if unknown:
        raise KustomizeError(f"images: fields this renderer does not implement: {sorted(unknown)}")
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    name, _, tag = container["image"].partition(":")
                    if name == image["name"]:
                        new_tag = image.get("newTag", tag)
                        new_name = image.get("newName", name)
                        container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
            else:
                _set_images(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, image)
