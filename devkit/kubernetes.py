"""The Kubernetes manifests (``deploy/kubernetes``), and ``make k8s``
(``python -m devkit.kubernetes render``).

The manifests are plain files, listed in order by the folder's ``kustomization.yaml``, for
Kubernetes :data:`KUBERNETES_VERSION`. Rendering reads them and

* puts the connector image ``make images`` builds (:func:`devkit.project.connector_image`,
  ``KEC_CONNECTOR_IMAGE`` honoured) wherever a container names :data:`IMAGE_PLACEHOLDER`;
* stamps on each pod template the SHA-256 of the ConfigMaps its volumes mount
  (:data:`CONFIG_CHECKSUM`): the connector reads its config at start only, so a changed
  config must change the pods for ``kubectl apply`` to roll them;
* validates every document against the JSON schemas of that Kubernetes version, strict
  (an unknown field is an error), from the ``kubernetes-validate`` package, which ships
  them: no download at run time.

::

    python -m devkit.kubernetes render [--image IMAGE] [-o FILE]   # validated, or exit 1
    python -m devkit.kubernetes validate FILE...
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString

from devkit.errors import ManifestError
from devkit.project import ROOT, connector_image
from kec.errors import ConnectorError

__all__ = [
    "CONFIG_CHECKSUM",
    "IMAGE_PLACEHOLDER",
    "KUBERNETES_VERSION",
    "MANIFEST_DIR",
    "dump",
    "load",
    "pod_templates",
    "render",
    "validate",
]

KUBERNETES_VERSION = "1.30"
MANIFEST_DIR = ROOT / "deploy" / "kubernetes"
# What the manifests name the connector's image; the renderer replaces it with the built one.
IMAGE_PLACEHOLDER = "kafka-event-connector"
CONFIG_CHECKSUM = "kafka-event-connector/config-sha256"
# Kinds whose spec.template is a pod template.
_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

Document = dict[str, Any]


def _yaml() -> YAML:
    # The safe loader gives plain dicts, lists and scalars, nothing executable.
    return YAML(typ="safe", pure=True)


def read_documents(path: Path) -> list[Document]:
    """Every non-empty YAML document of ``path``, each a mapping."""
    try:
        loaded = list(_yaml().load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from exc
    except YAMLError as exc:
        raise ManifestError(f"{path}: not YAML: {exc}") from exc
    documents = [doc for doc in loaded if doc is not None]
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict) or "kind" not in doc:
            raise ManifestError(f"{path}: document {index + 1} is not a Kubernetes object")
    return documents


def resource_files(directory: Path = MANIFEST_DIR) -> list[Path]:
    """The manifest files ``directory``'s kustomization.yaml lists, in its order."""
    index = directory / "kustomization.yaml"
    (kustomization,) = read_documents(index) or [{}]
    resources = kustomization.get("resources")
    if not isinstance(resources, list) or not resources:
        raise ManifestError(f"{index}: no resources listed")
    files = [directory / str(name) for name in resources]
    for file in files:
        if not file.is_file():
            raise ManifestError(f"{index}: lists {file.name}, which is not a file there")
    return files


def load(directory: Path = MANIFEST_DIR) -> list[Document]:
    """The manifests' documents, as the files hold them."""
    return [doc for file in resource_files(directory) for doc in read_documents(file)]


def pod_templates(documents: Sequence[Document]) -> Iterator[tuple[Document, Document]]:
    """``(workload, its pod template)`` for each workload among ``documents``."""
    for doc in documents:
        if doc.get("kind") in _WORKLOADS:
            template = doc.get("spec", {}).get("template")
            if isinstance(template, dict):
                yield doc, template


def _config_maps_of(pod_spec: Document) -> list[str]:
    """The names of the ConfigMaps a pod spec's volumes mount (plain or projected)."""
    names: list[str] = []
    for volume in pod_spec.get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        names += [s["configMap"]["name"] for s in sources if "configMap" in s]
    return names


def render(documents: Sequence[Document], image: str | None = None) -> list[Document]:
    """Copies of ``documents`` with ``image`` (default: :func:`connector_image`) for the
    placeholder and a config checksum on each pod template."""
    image = image or connector_image()
    rendered = copy.deepcopy(list(documents))
    config_maps = {
        doc["metadata"]["name"]: doc.get("data", {})
        for doc in rendered
        if doc.get("kind") == "ConfigMap"
    }
    placed = 0
    for workload, template in pod_templates(rendered):
        spec = template.get("spec", {})
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            if container.get("image") == IMAGE_PLACEHOLDER:
                container["image"] = image
                placed += 1
        mounted = _config_maps_of(spec)
        missing = [name for name in mounted if name not in config_maps]
        if missing:
            raise ManifestError(
                f"{workload['kind']}/{workload['metadata']['name']} mounts ConfigMap "
                f"{', '.join(missing)}, which the manifests do not define"
            )
        if mounted:
            data = {name: config_maps[name] for name in sorted(mounted)}
            digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
            annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
            annotations[CONFIG_CHECKSUM] = digest
    if not placed:
        raise ManifestError(f"no container of the manifests names the image {IMAGE_PLACEHOLDER}")
    return rendered


def _literal_blocks(node: Any) -> Any:
    """Multi-line strings (the config file in the ConfigMap) as YAML literal blocks."""
    if isinstance(node, dict):
        return {key: _literal_blocks(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_literal_blocks(item) for item in node]
    if isinstance(node, str) and "\n" in node:
        return LiteralScalarString(node)
    return node


def dump(documents: Sequence[Document]) -> str:
    """``documents`` as one multi-document YAML text, as ``kubectl apply -f`` takes it."""
    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump_all([_literal_blocks(doc) for doc in documents], out)
    return out.getvalue()


def _name(doc: Document) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def validate(documents: Sequence[Document], version: str = KUBERNETES_VERSION) -> list[str]:
    """One line per problem found in ``documents`` against the JSON schemas of Kubernetes
    ``version``, strict: unknown fields are problems, and so is a kind it has no schema for.
    """
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import (
            SchemaNotFoundError,
            ValidationError,
            all_versions,
            major_minor,
        )
    except ImportError as exc:
        raise ManifestError(
            "the Python package kubernetes-validate is missing: `make setup` installs it "
            "(pyproject's test extra)"
        ) from exc
    # Its schemas of that very minor version, not the nearest older ones it would fall to.
    shipped = sorted({major_minor(v) for v in all_versions()})
    if major_minor(version) not in shipped:
        raise ManifestError(
            f"kubernetes-validate has no schemas for Kubernetes {version} "
            f"(it has {', '.join(shipped)})"
        )
    problems: list[str] = []
    for doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except ValidationError as exc:
            where = ".".join(str(part) for part in exc.path) or "(top level)"
            problems.append(f"{_name(doc)}: {where}: {exc.message}")
        except SchemaNotFoundError as exc:
            problems.append(f"{_name(doc)}: {exc.message}")
    return problems


def _checked(documents: list[Document], source: str) -> list[Document]:
    problems = validate(documents)
    if problems:
        lines = "\n  ".join(problems)
        raise ManifestError(f"{source}: invalid for Kubernetes {KUBERNETES_VERSION}:\n  {lines}")
    return documents


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.kubernetes",
        description=f"The Kubernetes manifests of deploy/kubernetes, for Kubernetes "
        f"{KUBERNETES_VERSION}: render them with the connector image, or validate files.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser(
        "render", help="Render the manifests (validated) with the connector image."
    )
    render_cmd.add_argument(
        "--image",
        default=None,
        help="The connector image [what `make images` builds: "
        f"{connector_image()}; env KEC_CONNECTOR_IMAGE].",
    )
    render_cmd.add_argument(
        "-o", "--output", type=Path, default=None, help="Write here instead of stdout."
    )
    validate_cmd = commands.add_parser(
        "validate", help="Validate manifest files against the Kubernetes schemas."
    )
    validate_cmd.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "render":
            text = dump(_checked(render(load(), args.image), str(MANIFEST_DIR)))
            if args.output is None:
                sys.stdout.write(text)
            else:
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(text, encoding="utf-8")
                print(f"{args.output}: valid for Kubernetes {KUBERNETES_VERSION}")
        else:
            for file in args.files:
                _checked(read_documents(file), str(file))
                print(f"{file}: valid for Kubernetes {KUBERNETES_VERSION}")
    except ConnectorError as exc:
        print(f"devkit.kubernetes: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
