"""A minimal `kustomize build` of the features k8s/ uses, so the deployment tests render every overlay offline.

Supported: `resources` (files and kustomization folders), `components`, `namespace`, `labels` (metadata
only), `images`, and `patches` given as RFC 6902 JSON patches with a `target` of kind and name. Anything
else raises `UnsupportedError` instead of being ignored, so the renderer cannot silently drift from
kustomize; tests/unit/test_deployment.py also compares it with `kubectl kustomize` where one is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Document = dict[str, Any]
KUSTOMIZATION = ("kustomize.config.k8s.io/v1beta1", "Kustomization")
COMPONENT = ("kustomize.config.k8s.io/v1alpha1", "Component")
FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "components", "patches", "images"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}
CONTAINER_LISTS = ("containers", "initContainers")


class UnsupportedError(ValueError):
    """The kustomization uses a feature this renderer does not implement (or uses one wrongly)."""


def build(directory: Path) -> list[Document]:
    """The resources `kustomize build directory` outputs, in the order of their sources."""
    kustomization = read(directory)
    if kind_of(kustomization) != KUSTOMIZATION:
        raise UnsupportedError(f"{directory}: a Component is built only through a Kustomization that lists it")
    return _apply(directory, kustomization, [])


def read(directory: Path) -> dict[str, Any]:
    """The kustomization file of a folder, refusing fields this renderer does not implement."""
    data: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = sorted(set(data) - FIELDS)
    if unknown or kind_of(data) not in (KUSTOMIZATION, COMPONENT):
        raise UnsupportedError(f"{directory}: unsupported kustomization fields or kind: {unknown or kind_of(data)}")
    return data


def kind_of(data: dict[str, Any]) -> tuple[str, str]:
    return str(data.get("apiVersion")), str(data.get("kind"))


def resource_id(doc: Document) -> tuple[str, str, str, str]:
    meta = doc["metadata"]
    return doc["apiVersion"], doc["kind"], meta.get("namespace", ""), meta["name"]


def _apply(directory: Path, kustomization: dict[str, Any], inherited: list[Document]) -> list[Document]:
    """kustomize's order: resources, then each component (its resources, then its transformers over
    everything so far), then this kustomization's own patches, namespace, labels and images."""
    docs = list(inherited)
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            docs.extend(build(path))
        else:
            docs.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    for entry in kustomization.get("components", []):
        component = read(directory / entry)
        if kind_of(component) != COMPONENT:
            raise UnsupportedError(f"{directory / entry}: listed under components but not a Component")
        docs = _apply(directory / entry, component, docs)
    ids = [resource_id(doc) for doc in docs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UnsupportedError(f"{directory}: resources defined twice: {duplicates}")
    _transform(directory, kustomization, docs)
    return docs


def _transform(directory: Path, kustomization: dict[str, Any], docs: list[Document]) -> None:
    for patch in kustomization.get("patches", []):
        _patch(directory, patch, docs)
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for entry in kustomization.get("labels", []):
        if entry.get("includeSelectors") or set(entry) - {"pairs", "includeSelectors"}:
            raise UnsupportedError(f"{directory}: only metadata labels (includeSelectors: false) are supported")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for image in kustomization.get("images", []):
        for doc in docs:
            _set_image(doc, image)


def _patch(directory: Path, patch: dict[str, Any], docs: list[Document]) -> None:
    target = patch.get("target", {})
    if set(patch) - {"path", "patch", "target"} or set(target) - {"kind", "name"} or not target:
        raise UnsupportedError(f"{directory}: patches need a target of kind and name, and nothing else: {patch}")
    text = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text(encoding="utf-8")
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise UnsupportedError(f"{directory}: only JSON patches (a list of operations) are supported")
    matched = [doc for doc in docs if _matches(doc, target)]
    if not matched:
        raise UnsupportedError(f"{directory}: patch target {target} matches no resource")
    for doc in matched:
        for operation in operations:
            json_patch(doc, operation)


def _matches(doc: Document, target: dict[str, str]) -> bool:
    return doc["kind"] == target.get("kind", doc["kind"]) and doc["metadata"]["name"] == target.get(
        "name", doc["metadata"]["name"]
    )


def json_patch(doc: Any, operation: dict[str, Any]) -> None:
    """One RFC 6902 operation (add, replace, remove) applied in place."""
    op, path = operation["op"], operation["path"]
    if op not in ("add", "replace", "remove"):
        raise UnsupportedError(f"JSON patch op {op!r} is not supported")
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(node, list):
        if op == "add":
            node.insert(len(node) if last == "-" else int(last), value)
        elif op == "replace":
            node[int(last)] = value
        else:
            del node[int(last)]
        return
    if op != "add" and last not in node:
        raise UnsupportedError(f"JSON patch {op} of {path}: no such member")
    if op == "remove":
        del node[last]
    else:
        node[last] = value


def _set_image(doc: Document, image: dict[str, str]) -> None:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if "template" in spec else spec
    for field in CONTAINER_LISTS:
        for container in pod.get(field, []):
            name, tag = _split_image(container["image"])
            if name == image["name"]:
                new_tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")


def _split_image(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag, or the colon belongs to a registry's port
        return image, ""
    return name, tag
