"""Changing a running ``event-connector run``: config reload, pause and resume.

:class:`Control` is what SIGHUP and the admin API act on (``service.control`` for one
process; with ``pipeline.processes: N`` the supervisor's, which forwards to every child).
docs/architecture.md, "Reloading the config", states the guarantees; in short:

* :meth:`Control.reload` reads the config file ``run`` was started with and validates it
  whole first. Only rules, targets, ``retry`` and the rules' match limits
  (``pipeline.match_max_*``) may change; any other setting that differs (the Kafka
  connection, ``group_id``, namespaces and topics, ``checkpoint``, the rest of
  ``pipeline``, ``http``, ``metrics``...) refuses the reload, naming it. Refused, the
  running config is kept.
* The new rules replace the old on the pipeline's thread between two batches, so each
  batch is evaluated wholly by one *rules version* (1 at start, +1 per reload that
  changed something). Changed and added targets are opened before that swap; those that
  went out of use are closed once the calls handed to them are answered.
* Actions already checkpointed keep the rule version that made them: their ids and
  payloads are fixed in the store, and a restarted owner loads them from there; a
  checkpointed event is never evaluated again.
* A paused rule makes no action: its events are checkpointed without its actions, and
  they are not made on resume. A paused target's actions wait in the outbox (no attempt
  counted; backpressure applies) and are delivered in order on resume. Pauses live in
  memory: a restart of ``run`` starts with none (a supervisor's restarted child starts
  with the instance's).

:func:`diff_configs` and :func:`restart_only` are the pure comparison of two configs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from kec.errors import ConfigError, ConfigFileError, ConnectorError

if TYPE_CHECKING:
    from connector.config import ConnectorConfig

__all__ = [
    "RELOADABLE",
    "ConfigDiff",
    "ConfigSource",
    "Control",
    "Reconfigurable",
    "ReloadResult",
    "SignalReload",
    "diff_configs",
    "reload_logged",
    "restart_only",
]

log = logging.getLogger(__name__)

Kind = Literal["rule", "target"]

# What a reload may change: whole sections, and single settings of ``pipeline``.
RELOADABLE = frozenset({"rules", "targets", "retry"})
RELOADABLE_PIPELINE = frozenset({"match_max_value_length", "match_max_json_depth"})


@dataclass(frozen=True)
class ConfigDiff:
    """What differs between two configs, by name."""

    rules_added: tuple[str, ...] = ()
    rules_removed: tuple[str, ...] = ()
    rules_changed: tuple[str, ...] = ()
    targets_added: tuple[str, ...] = ()
    targets_removed: tuple[str, ...] = ()
    targets_changed: tuple[str, ...] = ()
    retry_changed: bool = False
    limits_changed: bool = False
    rules_reordered: bool = False  # same rules, another order: their actions' order changes
    restart_only: tuple[str, ...] = ()  # settings that cannot change while run runs

    @property
    def rules(self) -> bool:
        """Whether the evaluator must be rebuilt."""
        return bool(
            self.rules_added or self.rules_removed or self.rules_changed
            or self.limits_changed or self.rules_reordered
        )  # fmt: skip

    @property
    def targets(self) -> bool:
        return bool(self.targets_added or self.targets_removed or self.targets_changed)

    @property
    def changed(self) -> bool:
        return self.rules or self.targets or self.retry_changed


@dataclass(frozen=True)
class ReloadResult:
    """What a reload changed, and the rules version running now."""

    rules_version: int
    rules_added: tuple[str, ...] = ()
    rules_removed: tuple[str, ...] = ()
    rules_changed: tuple[str, ...] = ()
    targets_added: tuple[str, ...] = ()
    targets_removed: tuple[str, ...] = ()
    targets_changed: tuple[str, ...] = ()
    retry_changed: bool = False
    limits_changed: bool = False
    changed: bool = True

    @classmethod
    def of(cls, diff: ConfigDiff, version: int) -> ReloadResult:
        return cls(
            version, diff.rules_added, diff.rules_removed, diff.rules_changed,
            diff.targets_added, diff.targets_removed, diff.targets_changed,
            diff.retry_changed, diff.limits_changed, diff.changed,
        )  # fmt: skip

    def summary(self) -> str:
        """One line: what changed (``nothing changed`` when nothing did)."""
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("rules added:", self.rules_added),
                ("rules removed:", self.rules_removed),
                ("rules changed:", self.rules_changed),
                ("targets added:", self.targets_added),
                ("targets removed:", self.targets_removed),
                ("targets changed:", self.targets_changed),
            )
            if names
        ]
        if self.retry_changed:
            parts.append("retry changed")
        if self.limits_changed:
            parts.append("match limits changed")
        if self.changed and not parts:
            parts.append("rule order changed")
        return "; ".join(parts) or "nothing changed"


def _named(items: Mapping[str, Any], other: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
    added = tuple(n for n in other if n not in items)
    removed = tuple(n for n in items if n not in other)
    changed = tuple(n for n in items if n in other and items[n] != other[n])
    return added, removed, changed


def _dump(model: Any) -> Any:
    # Compared as plain data: a model's compiled parts (RE2 patterns) compare by identity.
    return model.model_dump(mode="python")


def restart_only(old: ConnectorConfig, new: ConnectorConfig) -> tuple[str, ...]:
    """The settings (dotted paths, e.g. ``group_id``, ``checkpoint.path``) that differ
    between ``old`` and ``new`` and that a reload cannot change. Values are never named:
    they may be secrets."""
    a, b = _dump(old), _dump(new)
    for data in (a, b):
        for key in RELOADABLE:
            data.pop(key, None)
        for key in RELOADABLE_PIPELINE:
            data.get("pipeline", {}).pop(key, None)
    found: list[str] = []
    _differences(a, b, "", found)
    return tuple(found)


def _differences(a: Any, b: Any, where: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in a or key not in b:
                found.append(path)
            else:
                _differences(a[key], b[key], path, found)
    elif a != b:
        found.append(where or "(top level)")


def diff_configs(old: ConnectorConfig, new: ConnectorConfig) -> ConfigDiff:
    """What a reload from ``old`` to ``new`` changes (:class:`ConfigDiff`); pure."""
    old_rules = {r.name: _dump(r) for r in old.rules}
    new_rules = {r.name: _dump(r) for r in new.rules}
    rules_added, rules_removed, rules_changed = _named(old_rules, new_rules)
    old_targets = {n: _dump(s) for n, s in old.targets.items()}
    new_targets = {n: _dump(s) for n, s in new.targets.items()}
    targets_added, targets_removed, targets_changed = _named(old_targets, new_targets)
    kept = [r.name for r in old.rules if r.name in new_rules]
    order = [r.name for r in new.rules if r.name in old_rules]
    return ConfigDiff(
        rules_added=rules_added,
        rules_removed=rules_removed,
        rules_changed=rules_changed,
        targets_added=targets_added,
        targets_removed=targets_removed,
        targets_changed=targets_changed,
        retry_changed=_dump(old.retry) != _dump(new.retry),
        limits_changed=old.pipeline.match_limits() != new.pipeline.match_limits(),
        rules_reordered=kept != order,
        restart_only=restart_only(old, new),
    )


@dataclass(frozen=True)
class ConfigSource:
    """Where ``run``'s config came from, to read it again: the file, ``--data-dir``, and
    ``run --processes`` (kept over the file's ``pipeline.processes``)."""

    path: Path
    data_dir: Path | None = None
    processes: str | None = None

    def read(self) -> str:
        from connector.config.loader import read_config_text

        return read_config_text(self.path)

    def load(self, text: str | None = None) -> ConnectorConfig:
        """The config of ``text`` (default: the file as it is now), validated."""
        from connector.config import load_config

        cfg = load_config(self.path, data_dir=self.data_dir, text=text)
        if self.processes is not None:
            pipeline = type(cfg.pipeline).model_validate(
                {**cfg.pipeline.model_dump(), "processes": self.processes}
            )
            cfg = cfg.model_copy(update={"pipeline": pipeline})
        return cfg


class Reconfigurable(Protocol):
    """What applies a control's decisions: a running service, or a supervisor that
    forwards them to its children."""

    def apply(self, config: ConnectorConfig, text: str, diff: ConfigDiff, version: int) -> None:
        """Run ``config`` (``text`` as read) as rules version ``version``; raise a
        :class:`~kec.errors.ConnectorError` when it cannot (nothing changed then)."""

    def set_paused(self, rules: frozenset[str], targets: frozenset[str]) -> None: ...


def one_line(exc: ConfigError) -> str:
    """A config error as one line (a file's errors joined by ``; ``)."""
    if isinstance(exc, ConfigFileError):
        return "; ".join(exc.errors)
    return " ".join(str(exc).split())


class Control:
    """Reload, pause and resume for a running connector (module docstring).

    Thread-safe: one operation at a time. ``config``: the config running now (None: ``run``
    without a file, which has rules ``rules`` and targets ``targets`` and cannot reload).
    """

    def __init__(
        self,
        target: Reconfigurable,
        config: ConnectorConfig | None,
        *,
        source: ConfigSource | None = None,
        version: int = 1,
        rules: Collection[str] = (),
        targets: Collection[str] = (),
    ) -> None:
        self._target = target
        self._config = config
        self._source = source
        self._version = version
        self._rules = frozenset(r.name for r in config.rules) if config else frozenset(rules)
        self._targets = frozenset(config.targets) if config else frozenset(targets)
        self._paused: dict[str, frozenset[str]] = {"rule": frozenset(), "target": frozenset()}
        self._lock = threading.Lock()

    @property
    def rules_version(self) -> int:
        """1 at start, +1 per reload that changed something."""
        return self._version

    @property
    def config(self) -> ConnectorConfig | None:
        """The config running now."""
        return self._config

    def paused(self) -> dict[str, list[str]]:
        """``{"rules": [...], "targets": [...]}``: what is paused now, sorted."""
        return {
            "rules": sorted(self._paused["rule"]),
            "targets": sorted(self._paused["target"]),
        }

    # -- reload --------------------------------------------------------------------------

    def reload(self) -> ReloadResult:
        """Read the config file ``run`` was started with again and run it (module
        docstring). :class:`~kec.errors.ConfigError` (one line, with file:line where the
        file is at fault) when it is invalid, changes a setting that needs a restart, or
        a new target cannot be opened; the running config is kept then."""
        source = self._source
        if source is None:
            raise ConfigError("run was started without a config file: there is nothing to reload")
        try:
            text = source.read()
        except ConfigError as exc:
            raise ConfigError(one_line(exc)) from exc
        return self.reload_text(text)

    def reload_text(self, text: str, version: int | None = None) -> ReloadResult:
        """:meth:`reload` of ``text`` (the file's content, read by the caller); ``version``:
        the rules version to run it as (a supervisor's child is told its instance's)."""
        source = self._source
        if source is None or self._config is None:
            raise ConfigError("run was started without a config file: there is nothing to reload")
        with self._lock:
            try:
                new = source.load(text)
            except ConfigError as exc:
                raise ConfigError(one_line(exc)) from exc
            diff = diff_configs(self._config, new)
            if diff.restart_only:
                raise ConfigError(
                    f"{source.path}: {', '.join(diff.restart_only)} cannot change while run "
                    "runs (restart it for that); the running config is kept"
                )
            if version is None:
                if not diff.changed:
                    log.info("config %s reloaded: nothing changed (rules version %d)",
                             source.path, self._version)  # fmt: skip
                    return ReloadResult.of(diff, self._version)
                version = self._version + 1
            self._target.apply(new, text, diff, version)
            self._config, self._version = new, version
            self._rules = frozenset(r.name for r in new.rules)
            self._targets = frozenset(new.targets)
            result = ReloadResult.of(diff, version)
            log.info("config %s reloaded: rules version %d: %s", source.path, version,
                     result.summary())  # fmt: skip
            gone = {k: v - (self._rules if k == "rule" else self._targets)
                    for k, v in self._paused.items()}  # fmt: skip
            if any(gone.values()):
                for kind, names in gone.items():
                    self._paused[kind] -= names
                said = ", ".join(f"{k} {n}" for k, v in gone.items() for n in sorted(v))
                log.info("no longer paused (removed by the reload): %s", said)
                self._apply_paused()
            return result

    # -- pause and resume ------------------------------------------------------------------

    def pause(self, kind: Kind, name: str) -> None:
        """Pause rule or target ``name`` (module docstring); idempotent.
        :class:`~kec.errors.ConfigError` when there is none of that name."""
        with self._lock:
            self._check(kind, name)
            if name in self._paused[kind]:
                return
            self._paused[kind] |= {name}
            self._apply_paused()
            log.warning("paused %s %s", kind, name)

    def resume(self, kind: Kind, name: str) -> None:
        """Resume what :meth:`pause` paused; idempotent."""
        with self._lock:
            self._check(kind, name)
            if name not in self._paused[kind]:
                return
            self._paused[kind] -= {name}
            self._apply_paused()
            log.warning("resumed %s %s", kind, name)

    def set_paused(self, rules: Collection[str], targets: Collection[str]) -> None:
        """Pause exactly these (a supervisor telling its child the instance's pauses);
        names this config does not have are ignored."""
        with self._lock:
            self._paused = {
                "rule": frozenset(rules) & self._rules,
                "target": frozenset(targets) & self._targets,
            }
            self._apply_paused()

    def _check(self, kind: str, name: str) -> None:
        if kind not in ("rule", "target"):
            raise ConfigError(f"{kind!r}: pause and resume take a rule or a target")
        known = self._rules if kind == "rule" else self._targets
        if name not in known:
            raise ConfigError(
                f"no {kind} named {name!r} (the {kind}s: {', '.join(sorted(known)) or 'none'})"
            )

    def _apply_paused(self) -> None:
        self._target.set_paused(self._paused["rule"], self._paused["target"])


def reload_logged(control: Control) -> ReloadResult | None:
    """:meth:`Control.reload`, a refusal logged as one error line (SIGHUP)."""
    try:
        return control.reload()
    except ConnectorError as exc:
        log.error("config reload refused, the running config is kept: %s", exc)
    except Exception:
        log.exception("config reload failed, the running config is kept")
    return None


@dataclass
class SignalReload:
    """The SIGHUP handler of ``run``: a reload on a thread of its own (a signal handler
    runs on the pipeline's thread, which the reload waits for). Before ``control`` is
    set, the signal is only logged."""

    control: Control | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        thread = threading.Thread(target=self._reload, name="kec-reload", daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def _reload(self) -> None:
        control = self.control
        if control is None:
            log.warning("SIGHUP while run is starting: ignored (send it again once it runs)")
            return
        reload_logged(control)


def install_sighup(handler: Callable[[int, FrameType | None], Any]) -> None:
    """SIGHUP to ``handler`` where the platform has it."""
    import signal

    hup = getattr(signal, "SIGHUP", None)
    if hup is not None:
        signal.signal(hup, handler)
