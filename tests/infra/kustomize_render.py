"""A small kustomize-equivalent renderer for the features k8s/ uses, so the manifests can be rendered and validated on
a machine without kubectl or kustomize.

Supported, with kustomize v5 semantics: `resources` (files and directories holding a kustomization.yaml), `namespace`,
`labels` (pairs, includeSelectors: false, includeTemplates: false), `configMapGenerator` (envs and literals;
options.disableNameSuffixHash must be true; options.labels/annotations), `replacements` (source kind/name/fieldPath;
targets select kind/name; fieldPaths with dotted keys, list indices and [key=value] selectors) and the
`config.kubernetes.io/local-config` annotation (used while rendering, dropped from the output). Anything else in a
kustomization raises UnsupportedFeature instead of being silently ignored; when kubectl is available the test suite
also checks this renderer's output against `kubectl kustomize`.

Usage: python kustomize_render.py DIR  → the rendered objects as a YAML stream on stdout.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from typing import Any

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
LOCAL_CONFIG = "config.kubernetes.io/local-config"
CLUSTER_SCOPED_KINDS = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
}
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "configMapGenerator", "replacements"}


class UnsupportedFeature(Exception):
    """The kustomization uses something this renderer does not implement."""


class RenderError(Exception):
    """The kustomization is wrong in a way kustomize would also reject."""


def render(directory: str) -> list[dict[str, Any]]:
    """Render the kustomization in `directory` into a list of objects, local-config objects removed."""
    objects = _build(os.path.abspath(directory))
    return [o for o in objects if _annotations(o).get(LOCAL_CONFIG) != "true"]


def _find_kustomization(directory: str) -> str:
    for name in KUSTOMIZATION_NAMES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise RenderError(f"no kustomization file in {directory}")


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _load_yaml_stream(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _build(directory: str) -> list[dict[str, Any]]:
    with open(_find_kustomization(directory), encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - SUPPORTED_KEYS
    if unknown:
        raise UnsupportedFeature(f"{directory}: kustomization fields not supported: {sorted(unknown)}")
    if k.get("kind", "Kustomization") != "Kustomization":
        raise UnsupportedFeature(f"{directory}: only kind Kustomization is supported")

    objects: list[dict[str, Any]] = []
    for entry in k.get("resources") or []:
        path = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(path):
            objects.extend(_build(path))
        elif os.path.isfile(path):
            objects.extend(_load_yaml_stream(path))
        else:
            raise RenderError(f"{directory}: resource {entry!r} does not exist")

    for gen in k.get("configMapGenerator") or []:
        objects.append(_config_map(directory, gen))

    _check_unique(objects, directory)

    # Order as kustomize applies its builtin transformers: namespace, then labels, then replacements.
    if "namespace" in k:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED_KINDS:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for label in k.get("labels") or []:
        extra = set(label) - {"pairs", "includeSelectors", "includeTemplates"}
        if extra or label.get("includeSelectors") or label.get("includeTemplates"):
            raise UnsupportedFeature(f"{directory}: labels supports only pairs with includeSelectors/includeTemplates false")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(
                {str(a): str(b) for a, b in label["pairs"].items()}
            )
    for rep in k.get("replacements") or []:
        _replace(objects, rep, directory)
    return objects


def _check_unique(objects: list[dict[str, Any]], directory: str) -> None:
    seen = set()
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"), obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in seen:
            raise RenderError(f"{directory}: object {key} defined twice")
        seen.add(key)


def _parse_env_file(path: str) -> dict[str, str]:
    data: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise RenderError(f"{path}:{lineno}: expected KEY=VALUE, got {line!r}")
            key, value = line.split("=", 1)
            data[key] = value
    return data


def _config_map(directory: str, gen: dict[str, Any]) -> dict[str, Any]:
    extra = set(gen) - {"name", "envs", "literals", "options"}
    if extra:
        raise UnsupportedFeature(f"{directory}: configMapGenerator fields not supported: {sorted(extra)}")
    options = gen.get("options") or {}
    if set(options) - {"disableNameSuffixHash", "labels", "annotations"}:
        raise UnsupportedFeature(f"{directory}: configMapGenerator options not supported: {sorted(options)}")
    if options.get("disableNameSuffixHash") is not True:
        raise UnsupportedFeature(f"{directory}: configMapGenerator needs disableNameSuffixHash: true here")
    data: dict[str, str] = {}
    for env in gen.get("envs") or []:
        path = os.path.join(directory, env)
        if not os.path.isfile(path):
            raise RenderError(f"{directory}: env file {env!r} does not exist")
        data.update(_parse_env_file(path))
    for literal in gen.get("literals") or []:
        key, value = literal.split("=", 1)
        data[key] = value
    metadata: dict[str, Any] = {"name": gen["name"]}
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    if options.get("annotations"):
        metadata["annotations"] = dict(options["annotations"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


_SELECTOR = re.compile(r"^\[([^=\]]+)=([^\]]*)\]$")


def _split_path(path: str) -> list[str]:
    # Dots separate segments except inside [key=value] selectors.
    return [s for s in re.findall(r"\[[^\]]*\]|[^.\[\]]+", path)]


def _walk(node: Any, segment: str, path: str) -> tuple[Any, Any]:
    """The container and key/index that `segment` names inside `node`."""
    m = _SELECTOR.match(segment)
    if m:
        if not isinstance(node, list):
            raise RenderError(f"{path}: selector {segment} applied to a non-list")
        matches = [i for i, item in enumerate(node) if isinstance(item, dict) and str(item.get(m.group(1))) == m.group(2)]
        if len(matches) != 1:
            raise RenderError(f"{path}: selector {segment} matched {len(matches)} items")
        return node, matches[0]
    if isinstance(node, list):
        if not segment.isdigit() or int(segment) >= len(node):
            raise RenderError(f"{path}: index {segment} out of range")
        return node, int(segment)
    if not isinstance(node, dict) or segment not in node:
        raise RenderError(f"{path}: field {segment!r} does not exist (kustomize does not create it either)")
    return node, segment


def _get(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for seg in _split_path(path):
        parent, key = _walk(node, seg, path)
        node = parent[key]
    return node


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    segs = _split_path(path)
    node: Any = obj
    for seg in segs[:-1]:
        parent, key = _walk(node, seg, path)
        node = parent[key]
    parent, key = _walk(node, segs[-1], path)
    parent[key] = copy.deepcopy(value)


def _select(objects: list[dict[str, Any]], select: dict[str, Any], directory: str) -> list[dict[str, Any]]:
    extra = set(select) - {"kind", "name", "namespace"}
    if extra:
        raise UnsupportedFeature(f"{directory}: replacement select fields not supported: {sorted(extra)}")
    return [
        o for o in objects
        if all((o.get("kind") if f == "kind" else o["metadata"].get(f)) == v for f, v in select.items())
    ]


def _replace(objects: list[dict[str, Any]], rep: dict[str, Any], directory: str) -> None:
    if set(rep) - {"source", "targets"}:
        raise UnsupportedFeature(f"{directory}: replacement fields not supported: {sorted(rep)}")
    src = dict(rep["source"])
    field = src.pop("fieldPath", "metadata.name")
    sources = _select(objects, src, directory)
    if len(sources) != 1:
        raise RenderError(f"{directory}: replacement source {rep['source']} matched {len(sources)} objects")
    value = _get(sources[0], field)
    for target in rep["targets"]:
        if set(target) - {"select", "fieldPaths"}:
            raise UnsupportedFeature(f"{directory}: replacement target fields not supported: {sorted(target)}")
        matched = _select(objects, target["select"], directory)
        if not matched:
            raise RenderError(f"{directory}: replacement target {target['select']} matched nothing")
        for obj in matched:
            for path in target["fieldPaths"]:
                _set(obj, path, value)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    yaml.safe_dump_all(render(argv[1]), sys.stdout, sort_keys=True, default_flow_style=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
