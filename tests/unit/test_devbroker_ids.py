"""The local broker's KRaft cluster id (pure: no JVM)."""

from __future__ import annotations

from collections.abc import Iterator

from devkit.broker import new_cluster_id


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    # 0xf8 encodes to "-" first in URL-safe base64: the storage tool would read it as an
    # option. The id is drawn again.
    draws: Iterator[bytes] = iter([b"\xf8" + bytes(15), bytes(range(16))])
    cluster_id = new_cluster_id(lambda: next(draws))
    assert cluster_id == "AAECAwQFBgcICQoLDA0ODw"
    assert len(new_cluster_id()) == 22 and not new_cluster_id().startswith("-")
