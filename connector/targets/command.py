"""The ``command`` target: run a process per action, the action in its environment.

The process does not get the connector's environment, which holds its own secrets (a
database DSN, a SASL password, the gateway token). It gets:

* from the connector's environment, only :data:`DEFAULT_INHERITED` (``PATH``, ``HOME``,
  ``LANG``, ``LC_*``, ``TZ``) and the names or globs listed in ``inherit_env``
  (``["*"]`` passes everything, secrets included);
* the ``env`` given in the config;
* the action's own variables (they win over both)::

    KEC_ACTION_ID     the action id, also as IDEMPOTENCY_KEY
    KEC_ACTION_KIND   start | stop | START | STOP | RESTART | notify
    KEC_RULE, KEC_NAMESPACE, KEC_EVENT_KEY
    KEC_WORKFLOW, KEC_TASK, KEC_CONTEXT   empty when the action has none
    KEC_ACTION_JSON   Action.to_json(); not set with ``stdin=True``

An argument of ``argv`` may hold ``{{ PATH }}`` placeholders
(:mod:`connector.common.template`): each is filled from the action, as text, into that
one argument (``["notify.sh", "{{ value.order_id }}"]``); no shell ever reads them, so a
value cannot inject a command. With ``shell=True`` placeholders are refused: use the
``KEC_*`` variables, which the shell expands as data.

With ``stdin=True`` the action's JSON is written to the process's stdin instead of
``KEC_ACTION_JSON``, so an action of any size works (the environment of a process is
limited to about 128 KiB per variable; a larger ``KEC_ACTION_JSON`` is rejected).

The outcome is read from the exit status: 0 is delivered; a code in ``reject_exit_codes``
is :class:`~kec.errors.TargetRejected` (dead-lettered, never retried); any other
code, death by a signal, or the ``timeout`` passing is a retriable
:class:`~kec.errors.TargetError`. The last bytes of stderr go into the error message;
stdout is discarded (the exit status is the contract).

The process runs in a session of its own, so a timeout kills its whole process group,
children included, and a retry never races a leftover of the previous attempt.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO

from connector.common.template import Template, has_placeholder
from connector.targets.base import Target
from kec.action import Action
from kec.errors import ConfigError, TargetError, TargetRejected

STDERR_TAIL = 2000  # bytes of stderr quoted in an error message
DEFAULT_INHERITED = ("PATH", "HOME", "LANG", "LC_*", "TZ")
"""What a command inherits from the connector's environment without ``inherit_env``."""


def action_environment(action: Action, *, with_json: bool = True) -> dict[str, str]:
    """The ``KEC_*`` variables (and ``IDEMPOTENCY_KEY``) that describe ``action``."""
    env = {
        "KEC_ACTION_ID": action.action_id,
        "KEC_ACTION_KIND": action.kind.value,
        "KEC_RULE": action.rule,
        "KEC_NAMESPACE": action.namespace,
        "KEC_WORKFLOW": action.workflow or "",
        "KEC_TASK": action.task or "",
        "KEC_CONTEXT": action.context or "",
        "KEC_EVENT_KEY": action.event_key,
        "IDEMPOTENCY_KEY": action.action_id,
    }
    if with_json:
        env["KEC_ACTION_JSON"] = action.to_json()
    return env


def inherited_environment(
    patterns: Iterable[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables of ``environ`` (default ``os.environ``) named by one of ``patterns``.

    A pattern is a name or a glob (``LC_*``), matched case-sensitively.
    """
    patterns = tuple(patterns)
    source = os.environ if environ is None else environ
    return {
        name: value
        for name, value in source.items()
        if any(fnmatchcase(name, pattern) for pattern in patterns)
    }


class CommandTarget(Target):
    """Runs ``argv`` once per action; see the module docstring for the protocol.

    With ``shell=True`` the command is one string run by ``/bin/sh -c``; otherwise
    ``argv`` is the argument vector and no shell is involved. ``inherit_env`` adds names
    (or globs) to :data:`DEFAULT_INHERITED`; the inherited values are read in :meth:`open`.
    """

    def __init__(
        self,
        name: str = "command",
        argv: Sequence[str] | str = (),
        *,
        timeout: float = 30.0,
        stdin: bool = False,
        reject_exit_codes: Iterable[int] = (),
        env: Mapping[str, str] | None = None,
        inherit_env: Iterable[str] = (),
        cwd: Path | None = None,
        shell: bool = False,
    ) -> None:
        if isinstance(argv, str):
            if not shell:
                raise ConfigError(f"command target {name!r}: argv must be a list without shell")
            argv = ["/bin/sh", "-c", argv]
        elif shell:
            raise ConfigError(f"command target {name!r}: with shell, argv must be one string")
        if not argv or not argv[0]:
            raise ConfigError(f"command target {name!r}: argv is empty")
        if timeout <= 0:
            raise ConfigError(f"command target {name!r}: timeout must be positive")
        self.name = name
        self._argv = list(argv)
        filled = [i for i, arg in enumerate(self._argv) if has_placeholder(arg)]
        if filled and shell:
            raise ConfigError(
                f"command target {name!r}: {{{{ }}}} placeholders cannot be used with shell "
                "(a value could inject a command): use the KEC_* variables"
            )
        if 0 in filled:
            raise ConfigError(f"command target {name!r}: the program itself cannot be a template")
        try:
            self._templates = {i: Template(self._argv[i]) for i in filled}
        except ValueError as exc:
            raise ConfigError(f"command target {name!r}: {exc}") from exc
        self._timeout = timeout
        self._stdin = stdin
        self._reject = frozenset(reject_exit_codes)
        self._env = dict(env or {})
        self._inherit = (*DEFAULT_INHERITED, *inherit_env)
        self._base_env: dict[str, str] = {}
        self._cwd = cwd
        self._executable: str | None = None

    def open(self) -> None:
        if self._executable is not None:
            return
        # Resolve once, against the PATH the process will see, so a typo is a config
        # error at start-up rather than a retried failure per action.
        base = {**inherited_environment(self._inherit), **self._env}
        program = self._argv[0]
        if self._cwd is not None and os.sep in program and not os.path.isabs(program):
            program = os.path.join(self._cwd, program)  # relative to the child's cwd
        found = shutil.which(program, path=base.get("PATH", os.defpath))
        if found is None:
            raise ConfigError(
                f"command target {self.name!r}: {self._argv[0]!r} is not an executable file"
                " (or not on PATH)"
            )
        self._base_env = base
        self._executable = found

    def close(self) -> None:
        self._executable = None
        self._base_env = {}

    def deliver(self, action: Action) -> None:
        if self._executable is None:
            raise TargetError(f"command target {self.name} is not open")
        env = {**self._base_env, **action_environment(action, with_json=not self._stdin)}
        data = action.to_json_bytes() if self._stdin else None
        with tempfile.TemporaryFile() as err:
            code = self._run(env, data, err, action)
            if code == 0:
                return
            err.seek(max(0, err.seek(0, os.SEEK_END) - STDERR_TAIL))
            tail = err.read().decode(errors="replace").strip()
        what = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
        message = f"command target {self.name}: {self._argv[0]} {what} (action {action.action_id})"
        if tail:
            message += f"; stderr: {tail}"
        if code in self._reject:
            raise TargetRejected(message)
        raise TargetError(message)

    def _run(self, env: dict[str, str], data: bytes | None, err: IO[bytes], action: Action) -> int:
        """Run the process to completion or timeout; return its exit status."""
        try:
            argv = self._argv
            if self._templates:
                argv = list(argv)
                for i, template in self._templates.items():
                    argv[i] = template.render_text(action)
            proc = subprocess.Popen(
                argv,
                executable=self._executable,
                stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                cwd=self._cwd,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except ValueError as exc:  # an argument filled with a NUL character
            raise TargetRejected(
                f"command target {self.name}: action {action.action_id} cannot be passed as "
                f"arguments: {exc}"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.E2BIG:
                # The action itself is too large for an environment: no retry can help.
                raise TargetRejected(
                    f"command target {self.name}: action {action.action_id} is too large"
                    " for the process environment (set `stdin: true` to pass it on stdin)"
                ) from exc
            raise TargetError(f"command target {self.name}: cannot start: {exc}") from exc
        with proc:
            try:
                # communicate() feeds stdin without deadlocking on a child that never reads.
                proc.communicate(data, timeout=self._timeout)
            except subprocess.TimeoutExpired as exc:
                self._kill_group(proc)
                raise TargetError(
                    f"command target {self.name}: {self._argv[0]} timed out after"
                    f" {self._timeout:g}s (action {action.action_id}); process group killed"
                ) from exc
            except BaseException:
                self._kill_group(proc)  # interrupted: leave no process behind
                raise
        return proc.returncode

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        # The group id is the child's pid (start_new_session); it outlives the child while
        # any member is alive, and the unreaped child keeps the pid from being reused.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
