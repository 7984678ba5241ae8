"""What a pod of deploy/kubernetes sees, for the tests: its workloads and containers in the
rendered documents, and the files of its config volume (the ConfigMap's and the Secret's
items at their paths) laid out in a folder."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

Doc = dict[str, Any]

# Made-up values of the Secret's keys; the trailing line end is what a file often has.
SECRETS = {
    "postgres-dsn": "postgresql://kec:s3cret@postgres.db.svc:5432/kec",
    "gateway-token": "t0ken-for-the-gateway",
}


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def deployments(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


def container(deployment: Doc) -> Doc:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def port_number(box: Doc, name: str) -> int:
    (port,) = [p["containerPort"] for p in box["ports"] if p["name"] == name]
    return int(port)


def config_mount(deployment: Doc) -> tuple[str, PurePosixPath]:
    """The mount path of the volume holding the config file ``-c`` names, and that file."""
    box = container(deployment)
    config_arg = PurePosixPath(box["args"][box["args"].index("-c") + 1])
    (mount,) = [m for m in box["volumeMounts"] if config_arg.is_relative_to(m["mountPath"])]
    return mount["mountPath"], config_arg


def write_config_volume(
    docs: list[Doc], deployment: Doc, folder: Path, secrets: dict[str, str] = SECRETS
) -> Path:
    """Write into ``folder`` what ``deployment``'s config volume holds (the projected
    ConfigMap and Secret items at their paths, files of mode ``defaultMode``, group
    ``fsGroup`` when this process may give it); return the config file ``-c`` names."""
    spec = deployment["spec"]["template"]["spec"]
    mount_path, config_arg = config_mount(deployment)
    (mount,) = [m for m in container(deployment)["volumeMounts"] if m["mountPath"] == mount_path]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    projected = volume["projected"]
    files: dict[str, str] = {}
    for source in projected["sources"]:
        if "configMap" in source:
            data = find(docs, "ConfigMap", source["configMap"]["name"])["data"]
            files.update({i["path"]: data[i["key"]] for i in source["configMap"]["items"]})
        for item in source.get("secret", {}).get("items", []):
            files[item["path"]] = secrets[item["key"]] + "\n"
    group = spec["securityContext"].get("fsGroup")
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if group is not None and os.geteuid() == 0:
            os.chown(path, 0, group)
            path.chmod(projected["defaultMode"])
        else:  # no other group to give it to: readable by all, as close as it gets
            path.chmod(projected["defaultMode"] | 0o444)
    for path in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        path.chmod(0o755)  # the volume's folders: anyone may enter them
    return folder / config_arg.relative_to(mount_path)
