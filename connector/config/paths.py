"""Where the files a config names go, and whether the connector may write there.

Files the connector writes (the sqlite store, a log target's file) are relative to the
*data directory* when the config gives a relative path: ``--data-dir``, else the
environment's ``KEC_DATA_DIR``, else the config file's folder. Files it reads (TLS
certificates, a command's ``cwd``) stay relative to the config file, which may live in a
read-only place (``/etc/kec`` in the container image, which sets ``KEC_DATA_DIR`` to its
data volume).

Before ``run`` and ``gateway`` open anything, :func:`check_writable` makes sure each of
those files can be written, and otherwise refuses to start with one line per file that
names its setting, the place and what to change, never a traceback.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, ValidationInfo

from kec.errors import ConfigError

if TYPE_CHECKING:
    from connector.config.models import ConnectorConfig

DATA_DIR_ENV = "KEC_DATA_DIR"

BASE_DIR = "base_dir"
"""Validation context key: the directory relative paths are resolved against (the config
file's, set by :func:`connector.config.load_config`); without it, the working directory."""
DATA_DIR = "data_dir"
"""Validation context key: the directory relative paths of files the connector writes are
resolved against (``--data-dir`` / ``KEC_DATA_DIR``, set by
:func:`connector.config.load_config`); without it, :data:`BASE_DIR`'s."""


def _from_base(path: Path, info: ValidationInfo) -> Path:
    base = info.context.get(BASE_DIR) if isinstance(info.context, dict) else None
    return Path(base) / path if base is not None and not path.is_absolute() else path


def _from_data_dir(path: Path, info: ValidationInfo) -> Path:
    data = info.context.get(DATA_DIR) if isinstance(info.context, dict) else None
    return Path(data) / path if data is not None and not path.is_absolute() else path


RelativePath = Annotated[Path, AfterValidator(_from_base)]
"""A path the connector reads (TLS files, a command's folder): when relative, relative to
the config file it was read from."""
StatePath = Annotated[Path, AfterValidator(_from_data_dir), AfterValidator(_from_base)]
"""A path the connector writes (the sqlite store, a log target's file): when relative,
relative to the data directory (``--data-dir`` / ``KEC_DATA_DIR``), by default the
config file's folder. Its location is checked at start-up (:func:`check_writable`)."""


def data_dir_of(config: str | Path, data_dir: str | Path | None, env: Mapping[str, str]) -> Path:
    """The data directory of the config file ``config``: ``data_dir``, else ``env``'s
    ``KEC_DATA_DIR``, else the file's folder; a relative one is taken from the working
    directory."""
    chosen = data_dir if data_dir not in (None, "") else env.get(DATA_DIR_ENV) or None
    if chosen is None:
        return Path(config).resolve().parent
    return Path(chosen).expanduser().resolve()


def unwritable(path: Path) -> str | None:
    """Why the file ``path`` cannot be written (None: it can).

    Creates the missing folders (as opening the file would) and a scratch file beside
    it, which it removes: asking is the only answer that holds for read-only mounts,
    permissions, ACLs and root alike.
    """
    if path.is_dir():
        return "it is a folder"
    folder = path.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not existing.is_dir():
        return f"not a folder: {existing}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if path.exists():
            os.close(os.open(path, os.O_RDWR))
        fd, scratch = tempfile.mkstemp(prefix=".kec-write-check-", dir=folder)
        os.close(fd)
        os.unlink(scratch)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        where = Path(exc.filename) if exc.filename is not None else path
        if where.name.startswith(".kec-write-check-"):
            where = folder
        return reason if where == path else f"{reason}: {where}"
    return None


def refusal(setting: str, path: Path, reason: str, data_dir: Path | None) -> str:
    """The one line that refuses ``path``: the setting, the place, what to change."""
    if data_dir is not None and path.is_relative_to(data_dir):
        advice = (
            f"set {DATA_DIR_ENV} (or --data-dir) to a writable folder, or give {setting} "
            "an absolute path"
        )
    else:
        advice = f"give {setting} a writable location"
    return f"{setting}: {path} is not writable ({reason}); {advice}"


def check_writable(cfg: ConnectorConfig, data_dir: Path | None) -> None:
    """Raise :class:`ConfigError`, one line per file, unless every file of
    :meth:`~connector.config.models.ConnectorConfig.written_files` can be written.
    ``data_dir``: where relative paths went."""
    check_files(cfg.written_files(), data_dir)


def check_files(files: list[tuple[str, Path]], data_dir: Path | None = None) -> None:
    """Raise :class:`ConfigError`, one line per ``(setting, path)`` that cannot be written."""
    lines = [
        refusal(setting, path, reason, data_dir)
        for setting, path in files
        if (reason := unwritable(path)) is not None
    ]
    if lines:
        raise ConfigError("\n".join(lines))
