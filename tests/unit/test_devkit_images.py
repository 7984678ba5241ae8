"""The connector image leaves the development tooling out (no Docker needed: the build
context and the inputs ``make images`` hashes for it)."""

from __future__ import annotations

from devkit import images
from devkit.project import ROOT, connector_image


def test_the_connector_image_neither_gets_nor_hashes_devkit() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "devkit" in ignored  # out of docker/Dockerfile's build context
    (connector,) = [image for image in images.images("base") if image.name == connector_image()]
    packages = {path.relative_to(ROOT).parts[0] for path in connector.inputs}
    assert {"kec", "checkpoint", "listeners", "connector"} <= packages
    assert "devkit" not in packages  # a change to devkit does not rebuild the image
