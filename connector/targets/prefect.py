"""The ``prefect`` target: actions as calls to Prefect 3's REST API.

``url`` is the API's root, as in ``PREFECT_API_URL`` (``http://host:4200/api``); an
``api_key`` is sent as a bearer token (Prefect Cloud). The deployment is the rule's
``workflow`` (or what ``deployments`` maps it to), written ``flow-name/deployment-name``
or as the deployment's id; names are looked up once and remembered.

========  ===============================  =======================  =========================
action    Prefect call                     a duplicate gets         delivered when
========  ===============================  =======================  =========================
start     ``POST /deployments/{id}/create  200 and the same flow    201 (created) or 200 (the
          _flow_run`` with ``idempotency   run, even after it       run of this key)
          _key`` = ``{key_prefix}{deploy-  finished
          ment id}:{action id}``; the
          input as the parameter
          ``event_parameter`` (``trigger``)
stop      ``POST /flow_runs/{run}/set_     the run is cancelling    the run is cancelling,
          state`` ``CANCELLING``; the run  or finished: not         cancelled, or finished
          is the event's ``context``       changed again
========  ===============================  =======================  =========================

Prefect's idempotency key is unique per *flow*, not per deployment, hence the deployment
id in it: two deployments of one flow, or two rules (the action id hashes the rule name),
never share a key.

Task actions (START, STOP, RESTART) are refused when the config is loaded: Prefect has no
API to act on one task of a running flow. Restarting a whole flow run (a new
``SCHEDULED`` state) is not offered either: it is keyed by nothing, so only an immediate
duplicate could be caught, never a resend after a crash.

Errors: no answer, 408, 429 and 5xx are transient; other 4xx are final, quoting Prefect's
``detail``. Note that Prefect answers parameters that fail the flow's schema with 409.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from connector.common.template import Template
from connector.targets.base import Target
from connector.targets.engine import execution_of, workflow_input
from connector.targets.engine_http import EngineHttp, engine_url
from kec.action import Action, ActionKind
from kec.errors import TargetError, TargetRejected

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
STOPPED = frozenset({"CANCELLING", "CANCELLED", "COMPLETED", "FAILED", "CRASHED"})


def _q(part: str) -> str:
    return quote(part, safe="")


class PrefectTarget(Target):
    """Delivers actions to one Prefect 3 API (see the module docstring)."""

    def __init__(
        self,
        name: str = "prefect",
        url: str = "http://127.0.0.1:4200/api",
        *,
        api_key: str | None = None,
        deployments: Mapping[str, str] | None = None,
        event_parameter: str = "trigger",
        key_prefix: str = "kec:",
        timeout: float = 10.0,
        verify: bool = True,
        concurrency: int = 8,
        template: Template | None = None,
    ) -> None:
        base = engine_url("prefect", name, url)
        self.name = name
        self.concurrency = concurrency
        self._deployments = dict(deployments or {})
        self._parameter = event_parameter
        self._template = template
        self._prefix = key_prefix
        self._http = EngineHttp(
            f"prefect target {name}",
            base,
            timeout=timeout,
            verify=verify,
            token=api_key,
            concurrency=concurrency,
        )
        self._ids: dict[str, str] = {}
        self._ids_lock = threading.Lock()

    def open(self) -> None:
        self._http.open()

    def close(self) -> None:
        self._http.close()

    def idempotency_key(self, deployment_id: str, action: Action) -> str:
        return f"{self._prefix}{deployment_id}:{action.action_id}"

    def deliver(self, action: Action) -> None:
        if action.kind is ActionKind.START_WORKFLOW:
            self._start(action)
        elif action.kind is ActionKind.STOP_WORKFLOW:
            self._stop(action)
        else:
            raise TargetRejected(
                f"{self._what(action)}: Prefect cannot act on one task of a flow run"
            )

    def deployment_id(self, action: Action) -> str:
        """The id of the deployment ``action`` names (looked up once by name)."""
        workflow = action.workflow or ""
        name = self._deployments.get(workflow, workflow)
        if _UUID.match(name):
            return name
        with self._ids_lock:
            known = self._ids.get(name)
        if known is not None:
            return known
        flow, _, deployment = name.partition("/")
        if not flow or not deployment:
            raise TargetRejected(
                f"{self._what(action)}: deployment {name!r} is neither an id nor flow/deployment"
            )
        path = f"/deployments/name/{_q(flow)}/{_q(deployment)}"
        response = self._http.request("GET", path)
        if not response.is_success:
            raise self._http.fail(response, f"{self._what(action)}: GET {path}")
        found = str(response.json()["id"])
        with self._ids_lock:
            self._ids[name] = found
        return found

    def _start(self, action: Action) -> None:
        deployment = self.deployment_id(action)
        path = f"/deployments/{_q(deployment)}/create_flow_run"
        body = {
            "idempotency_key": self.idempotency_key(deployment, action),
            "parameters": (
                self._template.render(action)
                if self._template is not None
                else {self._parameter: workflow_input(action)}
            ),
            "tags": ["kafka-event-connector", f"rule:{action.rule}"],
        }
        response = self._http.request("POST", path, json_body=body)
        if response.status_code in (200, 201):
            return  # 201 created; 200 the run this key made before
        raise self._http.fail(response, f"{self._what(action)}: POST {path}")

    def _stop(self, action: Action) -> None:
        run = execution_of(action, self._what(action))
        if not _UUID.match(run):
            raise TargetRejected(f"{self._what(action)}: context {run!r} is not a flow run id")
        path = f"/flow_runs/{_q(run)}/set_state"
        state = {
            "type": "CANCELLING",
            "message": f"kafka-event-connector action {action.action_id} (rule {action.rule})",
        }
        response = self._http.request("POST", path, json_body={"state": state})
        if not response.is_success:
            raise self._http.fail(response, f"{self._what(action)}: POST {path}")
        result: dict[str, Any] = response.json()
        now = (result.get("state") or {}).get("type")
        if now in STOPPED:
            return  # cancelling, or over already
        reason = (result.get("details") or {}).get("reason") or "no reason given"
        message = (
            f"{self._what(action)}: Prefect answered {result.get('status')} (run is {now}):"
            f" {reason}"
        )
        if result.get("status") == "WAIT":
            raise TargetError(message)
        raise TargetRejected(message)

    def _what(self, action: Action) -> str:
        return f"prefect target {self.name}, action {action.action_id} ({action.kind.value})"
