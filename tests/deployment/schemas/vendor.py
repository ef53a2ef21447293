"""Re-creates the vendored deployment schemas from the packages named in README.md (run by hand, offline)."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
K8S_KINDS = (
    "namespace-v1",
    "configmap-v1",
    "service-v1",
    "persistentvolumeclaim-v1",
    "deployment-apps-v1",
    "poddisruptionbudget-policy-v1",
)
KEDA_KINDS = {
    "keda.sh_scaledobjects.yaml": "scaledobject",
    "keda.sh_triggerauthentications.yaml": "triggerauthentication",
}
DEFS_PREFIX = "/api/_definitions.json#/$defs/"


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value.rsplit("/", 1)[-1])
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _write(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def vendor_kubernetes(wheel: Path, version: str) -> None:
    """Copies the kinds' schemas and the part of `_definitions.json` they reach (strict variant)."""
    root = f"kubernetes_validate/kubernetes-json-schema/{version}-local-strict/"
    out = HERE / "kubernetes"
    with zipfile.ZipFile(wheel) as zf:
        definitions = json.loads(zf.read(root + "_definitions.json"))
        kinds = {name: json.loads(zf.read(f"{root}{name}.json")) for name in K8S_KINDS}
    all_defs = definitions["$defs"]
    wanted: set[str] = set()
    todo = set().union(*(_refs(kind) for kind in kinds.values()))
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo |= _refs(all_defs[name]) - wanted
    definitions["$defs"] = {name: all_defs[name] for name in sorted(wanted)}
    for name, schema in kinds.items():
        _write(out / f"{name}.json", schema)
    _write(out / "_definitions.json", definitions)


def vendor_keda(module_dir: Path) -> None:
    """Extracts each CRD's v1alpha1 openAPIV3Schema as a standalone JSON schema."""
    for file_name, kind in KEDA_KINDS.items():
        crd = yaml.safe_load((module_dir / "config" / "crd" / "bases" / file_name).read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
        _write(HERE / "keda" / f"{kind}-keda-v1alpha1.json", version["schema"]["openAPIV3Schema"])


def vendor_compose(module_dir: Path) -> None:
    (HERE / "compose-spec.json").write_text((module_dir / "schema" / "compose-spec.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--kubernetes-validate-wheel", type=Path, required=True)
    p.add_argument("--kubernetes-version", default="v1.33.0")
    p.add_argument("--compose-go-dir", type=Path, required=True, help="module folder of compose-go/v2")
    p.add_argument("--keda-dir", type=Path, required=True, help="module folder of kedacore/keda/v2")
    args = p.parse_args()
    vendor_kubernetes(args.kubernetes_validate_wheel, args.kubernetes_version)
    vendor_keda(args.keda_dir)
    vendor_compose(args.compose_go_dir)


if __name__ == "__main__":
    main()
