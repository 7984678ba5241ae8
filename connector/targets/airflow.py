"""The ``airflow`` target: actions as calls to Airflow 3's REST API (``/api/v2``).

Authentication: ``username``/``password`` are exchanged for a bearer token at
``POST /auth/token`` (again when the token expires), or a fixed ``token`` is sent as is.
The DAG is the rule's ``workflow`` (or what ``dags`` maps it to); the run a task action or
a ``stop`` acts on is the ``dag_run_id`` in the event's ``context``.

========  ===============================  =====================  ===========================
action    Airflow call                     a duplicate gets       delivered when
========  ===============================  =====================  ===========================
start     ``POST …/dags/{dag}/dagRuns``    409 (checked: the run  200, or the run id exists
          ``dag_run_id`` = ``{run_id_      exists)
          prefix}{action id}``, ``conf``
          = the event (or the target's
          ``template`` filled in)
stop      ``PATCH …/dagRuns/{run}``        the run is finished    the run reads back failed
          ``state: failed``, then ``GET``  (checked first)        (or finished), or was
          it back                                                 already finished
START     answer the task's human-in-the-  the gate is answered   answered, or answered
          loop gate: ``PATCH …/task        (checked first), or    before; retried while the
          Instances/{task}/-1/hitlDetails``  409 (write-once)     task is not parked at its
          with ``start_option`` (default                          gate, or has been for less
          the gate's first option)                                than ``gate_settle_seconds``
STOP      ``PATCH …/taskInstances/{task}`` 409, or the task is    the task reads back
          ``new_state: failed``, then      finished (checked      failed (or finished), or
          ``GET`` it back                  first)                 was already finished
RESTART   ``POST …/clearTaskInstances``    **not idempotent**:    cleared, or the task's
          with ``note`` = the action id,   a second clear would   note already names this
          ``prevent_running_task``         restart the task again action; 409 (the task
                                                                  runs) is retried
========  ===============================  =====================  ===========================

START waits ``gate_settle_seconds`` (default 5, by Airflow's clock) after the gate opened:
Airflow 3.3 can mark a task FAILED when its gate is answered within a second or so of
the task parking there (the scheduler takes the exit of the parking process for a task
changed behind its back once the task is queued again), and a connector answers at once.

RESTART is the one action Airflow cannot deduplicate: clearing is not keyed. The target
guards it as far as the API allows: it reads the task instance first and counts the
action as delivered when its note already names the action id (the clear writes that note
in the same transaction), and it clears with ``prevent_running_task`` so that a resend
racing the new try is refused rather than obeyed. Two RESTART actions (two events) still
restart twice, as they should.

A stop (of a run) or a STOP (of a task) counts as delivered only once Airflow shows it
finished: after the ``PATCH`` the run or task is read back, and one still queued or
running (a write that was answered but not applied) is a transient error, so the stop is
sent again.

Errors: no answer, 408, 429 and 5xx (on SQLite, concurrent writes answer 500 "database is
locked") are transient; other 4xx are final, quoting Airflow's ``detail``. Run ids are
``^[A-Za-z0-9_.~:+-]+$``, at most 250 characters: the prefix is checked at config time.

Every id from an action (DAG, run, task) goes into the URL as one percent-encoded path
segment. One that cannot be a segment is refused (final) before any request: empty, ``.``
or ``..`` (a client and every proxy resolve them to another API path), or holding ``/``,
``\\`` or a control character (the API server decodes ``%2F`` back into a separator).
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from connector.common.redaction import redact
from connector.common.template import Template
from connector.targets.base import Target
from connector.targets.engine import execution_of, idempotency_key, start_input
from connector.targets.engine_http import EngineHttp, engine_url
from kec.action import Action, ActionKind
from kec.errors import ConfigError, TargetError, TargetRejected

API = "/api/v2"
FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
RUN_FINISHED = frozenset({"success", "failed"})
PARKED = frozenset({"awaiting_input", "deferred"})  # waiting at a gate (3.3; older: deferred)
NOTE_PREFIX = "kafka-event-connector action "


def path_segment(value: str, what: str) -> str:
    """``value`` percent-encoded as one URL path segment; :class:`TargetRejected` (final)
    when no encoding keeps it one (see the module docstring). ``what`` names it."""
    if value in ("", ".", "..") or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in value):
        raise TargetRejected(f"{what} {value!r} is not a single URL path segment")
    return quote(value, safe="")


def _seconds_between(created_at: object, server_date: str | None) -> float | None:
    """Seconds from ``created_at`` (ISO 8601) to the server's ``Date`` header, by the
    server's own clock; ``None`` when either is missing or unreadable."""
    if not isinstance(created_at, str) or not server_date:
        return None
    try:
        start = datetime.datetime.fromisoformat(created_at)
        now = email.utils.parsedate_to_datetime(server_date)
    except (TypeError, ValueError):
        return None
    return (now - start).total_seconds()


class AirflowTarget(Target):
    """Delivers actions to one Airflow 3 deployment (see the module docstring)."""

    def __init__(
        self,
        name: str = "airflow",
        url: str = "http://127.0.0.1:8080",
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        dags: Mapping[str, str] | None = None,
        run_id_prefix: str = "kec__",
        start_option: str | None = None,
        gate_settle: float = 5.0,
        timeout: float = 10.0,
        verify: bool = True,
        concurrency: int = 8,
        template: Template | None = None,
    ) -> None:
        base = engine_url("airflow", name, url)
        if (username is None) != (password is None):
            raise ConfigError(f"airflow target {name!r}: give username and password together")
        if token is not None and username is not None:
            raise ConfigError(f"airflow target {name!r}: give a token or a username, not both")
        self.name = name
        self.concurrency = concurrency
        self._dags = dict(dags or {})
        self._prefix = run_id_prefix
        self._start_option = start_option
        self._template = template
        self._gate_settle = gate_settle
        self._credentials = (username, password) if username and password else None
        self._http = EngineHttp(
            f"airflow target {name}",
            base,
            timeout=timeout,
            verify=verify,
            token=token,
            login=self._login if self._credentials else None,
            concurrency=concurrency,
        )

    def open(self) -> None:
        self._http.open()

    def close(self) -> None:
        self._http.close()

    def run_id(self, action: Action) -> str:
        """The ``dag_run_id`` of the run ``action`` starts (stable across resends)."""
        return idempotency_key(self._prefix, action)

    def dag_id(self, action: Action) -> str:
        workflow = action.workflow or ""
        return self._dags.get(workflow, workflow)

    def deliver(self, action: Action) -> None:
        if action.kind is ActionKind.START_WORKFLOW:
            self._start(action)
        elif action.kind is ActionKind.STOP_WORKFLOW:
            self._stop(action)
        elif action.kind is ActionKind.START_TASK:
            self._answer_gate(action)
        elif action.kind is ActionKind.STOP_TASK:
            self._fail_task(action)
        elif action.kind is ActionKind.RESTART_TASK:
            self._clear_task(action)
        else:
            raise TargetRejected(f"{self._what(action)}: the airflow target does not take it")

    # -- workflow actions -----------------------------------------------------------------

    def _dag_path(self, action: Action) -> str:
        return f"{API}/dags/{path_segment(self.dag_id(action), self._what(action) + ': dag id')}"

    def _run_path(self, action: Action, run: str) -> str:
        segment = path_segment(run, f"{self._what(action)}: dag run id")
        return f"{self._dag_path(action)}/dagRuns/{segment}"

    def _start(self, action: Action) -> None:
        run_id = self.run_id(action)
        run_path = self._run_path(action, run_id)
        path = f"{self._dag_path(action)}/dagRuns"
        body = {
            "dag_run_id": run_id,
            "logical_date": None,
            "conf": start_input(action, self._template),
            "note": self._note(action),
        }
        response = self._http.request("POST", path, json_body=body)
        if response.is_success:
            return
        if response.status_code == 409 and self._get(run_path) is not None:
            return  # a resend: the run with this action's id exists
        raise self._http.fail(response, f"{self._what(action)}: POST {path}")

    def _stop(self, action: Action) -> None:
        run = execution_of(action, self._what(action))
        path = self._run_path(action, run)
        current = self._require(path, action)
        if current.get("state") in RUN_FINISHED:
            return  # finished already: by this action's earlier delivery or by itself
        response = self._http.request(
            "PATCH", path, json_body={"state": "failed"}, params={"update_mask": "state"}
        )
        if not response.is_success:
            raise self._http.fail(response, f"{self._what(action)}: PATCH {path}")
        # Delivered only once Airflow shows it: an answered write is not a stopped run.
        state = self._require(path, action).get("state")
        if state not in RUN_FINISHED:
            raise TargetError(
                f"{self._what(action)}: asked Airflow to fail run {run!r}, but it reads back"
                f" as {state or 'unknown'}; the stop is sent again"
            )

    # -- task actions ---------------------------------------------------------------------

    def _task_path(self, action: Action) -> str:
        run = self._run_path(action, execution_of(action, self._what(action)))
        task = path_segment(action.task or "", f"{self._what(action)}: task id")
        return f"{run}/taskInstances/{task}"

    def _answer_gate(self, action: Action) -> None:
        path = f"{self._task_path(action)}/-1/hitlDetails"
        response = self._http.request("GET", path)
        if response.status_code != 404 and not response.is_success:
            raise self._http.fail(response, f"{self._what(action)}: GET {path}")
        gate: dict[str, Any] | None = response.json() if response.is_success else None
        if gate is not None and gate.get("response_received"):
            return  # answered (write-once): by this action's earlier delivery or by hand
        state = self._require(self._task_path(action), action).get("state")
        if state in FINISHED:
            raise TargetRejected(
                f"{self._what(action)}: task {action.task!r} is {state} and has no"
                " human-in-the-loop gate to answer"
            )
        if state not in PARKED or gate is None:
            if state in PARKED:
                raise TargetRejected(
                    f"{self._what(action)}: task {action.task!r} waits, but not for a person:"
                    " it has no human-in-the-loop gate"
                )
            raise TargetError(
                f"{self._what(action)}: task {action.task!r} ({state or 'not started'})"
                " is not waiting at its human-in-the-loop gate yet"
            )
        waited = _seconds_between(gate.get("created_at"), response.headers.get("Date"))
        if waited is not None and waited < self._gate_settle:
            raise TargetError(
                f"{self._what(action)}: the gate of {action.task!r} opened {waited:.0f}s ago;"
                f" it is answered once it has waited {self._gate_settle:g}s"
            )
        options = gate.get("options") or []
        option = self._start_option or (options[0] if options else None)
        if option is None:
            raise TargetRejected(
                f"{self._what(action)}: the gate of {action.task!r} has no options"
            )
        response = self._http.request(
            "PATCH", path, json_body={"chosen_options": [option], "params_input": {}}
        )
        if response.is_success or response.status_code == 409:
            return  # 409: answered meanwhile (write-once)
        raise self._http.fail(response, f"{self._what(action)}: PATCH {path}")

    def _fail_task(self, action: Action) -> None:
        path = self._task_path(action)
        current = self._require(path, action)
        if current.get("state") in FINISHED:
            return  # nothing left to stop
        response = self._http.request(
            "PATCH", path, json_body={"new_state": "failed", "note": self._note(action)}
        )
        if not response.is_success and response.status_code != 409:
            raise self._http.fail(response, f"{self._what(action)}: PATCH {path}")
        # 409: the task is in that state already. Either way, delivered once Airflow shows it.
        state = self._require(path, action).get("state")
        if state not in FINISHED:
            raise TargetError(
                f"{self._what(action)}: asked Airflow to fail task {action.task!r}, but it"
                f" reads back as {state or 'not started'}; the stop is sent again"
            )

    def _clear_task(self, action: Action) -> None:
        path = self._task_path(action)
        current = self._require(path, action)
        if (current.get("note") or "") == self._note(action):
            return  # this action's clear happened (the note is written with it)
        clear = f"{self._dag_path(action)}/clearTaskInstances"
        body = {
            "dry_run": False,
            "dag_run_id": execution_of(action, self._what(action)),
            "task_ids": [action.task],
            "only_failed": False,
            "reset_dag_runs": True,
            "prevent_running_task": True,
            "note": self._note(action),
        }
        response = self._http.request("POST", clear, json_body=body)
        if response.is_success:
            return
        error = self._http.fail(response, f"{self._what(action)}: POST {clear}")
        if response.status_code == 409:
            # prevent_running_task: the task runs now (not by this action: its note is
            # not ours), so the restart waits for the current try to end.
            raise TargetError(str(error))
        raise error

    # -- helpers --------------------------------------------------------------------------

    def _get(self, path: str) -> dict[str, Any] | None:
        """The resource at ``path``; ``None`` when Airflow answers 404."""
        response = self._http.request("GET", path)
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise self._http.fail(response, f"{self._http.what}: GET {path}")
        body: dict[str, Any] = response.json()
        return body

    def _require(self, path: str, action: Action) -> dict[str, Any]:
        """The resource at ``path``; a 404 is final (the DAG, run or task is unknown)."""
        response = self._http.request("GET", path)
        if not response.is_success:
            raise self._http.fail(response, f"{self._what(action)}: GET {path}")
        body: dict[str, Any] = response.json()
        return body

    def _note(self, action: Action) -> str:
        return f"{NOTE_PREFIX}{action.action_id} (rule {action.rule})"

    def _what(self, action: Action) -> str:
        return f"airflow target {self.name}, action {action.action_id} ({action.kind.value})"

    def _login(self, client: httpx.Client) -> str:
        assert self._credentials is not None
        username, password = self._credentials
        try:
            response = client.post("/auth/token", json={"username": username, "password": password})
        except httpx.HTTPError as exc:
            raise TargetError(
                f"airflow target {self.name}: POST {self._http.shown}/auth/token failed:"
                f" {type(exc).__name__}: {redact(str(exc), self._http.secrets)}"
            ) from exc
        if not response.is_success:
            raise self._http.fail(response, f"{self._http.what}: POST /auth/token")
        token = response.json().get("access_token")
        if not isinstance(token, str):
            raise TargetRejected(f"airflow target {self.name}: /auth/token gave no access_token")
        return token
