"""The ``event-connector`` subcommands, one module per area; ``connector.cli`` registers them.

Each module imports its heavy dependencies inside the command body, so ``--help`` stays fast.
:mod:`~connector.commands.ports` checks an address before ``run`` or ``gateway`` serves on it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import click
from click.core import ParameterSource

DATA_DIR_HELP = (
    "With -c: the folder relative paths of the files the connector writes (the sqlite "
    "store, log files) start from (env KEC_DATA_DIR) [the config file's folder]."
)


def data_dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--data-dir DIR`` (env ``KEC_DATA_DIR``): see :mod:`connector.config.paths`."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="KEC_DATA_DIR",
        default=None,
        metavar="DIR",
        help=DATA_DIR_HELP,
    )(func)


def refuse_data_dir_without_config(ctx: click.Context, config: object) -> None:
    """``--data-dir`` places a config file's paths: on the command line without -c it
    would be ignored, so it is refused (from the environment it is simply unused)."""
    if config is None and ctx.get_parameter_source("data_dir") is ParameterSource.COMMANDLINE:
        raise click.UsageError("--data-dir: only with -c (it places the config file's paths)")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM; the previous handlers come back afterwards."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals only reach the main thread
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
