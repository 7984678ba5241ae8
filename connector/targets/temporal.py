"""The ``temporal`` target: actions as Temporal workflow starts, stops and Workflow Updates.

Needs the ``temporal`` extra (``pip install 'kafka-event-connector[temporal]'``, the
official ``temporalio`` SDK). Each action is one call, made idempotent by Temporal itself:

========  ==============================  ==========================  ======================
action    Temporal call                   a duplicate gets            delivered when
========  ==============================  ==========================  ======================
start     ``StartWorkflowExecution``,     ``WorkflowAlreadyStarted``  started, or already
          id ``{id_prefix}{workflow}-     (also after the first run   started (the same id)
          {action id}``, id reuse policy  closed)
          ``REJECT_DUPLICATE``
stop      ``RequestCancel`` (or           the workflow is already     cancel requested, or
          ``Terminate`` with ``stop:      closed: ``NOT_FOUND``       the workflow is closed
          terminate``) of the workflow
          id in the event's ``context``
START,    Workflow Update ``update``      the same update's outcome   the update was
STOP,     (default ``task_action``) on    (update id = action id);    accepted (by the
RESTART   the workflow id in the          once the workflow closed:   validator) or is in
          action's ``context``, id = the  ``NOT_FOUND``, checked      the closed workflow's
          action id, waited on until      against its history         history
          ``ACCEPTED``
========  ==============================  ==========================  ======================

A started workflow gets one argument, :func:`~connector.targets.engine.workflow_input`
(the event: key, value, event id, namespace, …) or, with ``template``, that template
filled from the action; an update gets
:func:`~connector.targets.engine.task_input` (``{"action": "START", "task": …, "event":
…}``). Task actions, including RESTART, are exactly once because Temporal deduplicates
updates by id while the workflow lives; a closed workflow is searched for the update id
in its history. The limit is Temporal's retention: once a closed workflow is deleted
(the namespace's retention period, one day on the dev server), a re-sent ``start`` would
start it again.

Errors: ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``RESOURCE_EXHAUSTED``, ``ABORTED``,
``INTERNAL``, ``UNKNOWN``, ``CANCELLED`` and a failed connection are transient
(:class:`~kec.errors.TargetError`); an update refused by the workflow's validator, an
unknown workflow, namespace or execution, and every other status are final
(:class:`~kec.errors.TargetRejected`, with Temporal's message).

Threads: the SDK is asyncio. :meth:`TemporalTarget.open` starts one event loop in a
thread of its own; :meth:`~TemporalTarget.deliver`, callable from any number of threads at
once, submits a coroutine to it and waits for the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from typing import Any, Literal

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RetryConfig, RPCError, RPCStatusCode

from connector.common.template import Template
from connector.rules import TASK_ACTIONS
from connector.targets.base import Target
from connector.targets.engine import (
    execution_of,
    start_input,
    task_input,
    temporal_workflow_id,
)
from kec.action import Action, ActionKind
from kec.errors import ConfigError, TargetError, TargetRejected

OUTCOME_PROBE = timedelta(seconds=0.5)
RETRIABLE_CODES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.CANCELLED,
    }
)


def rpc_error(what: str, exc: RPCError) -> TargetError:
    """An :class:`RPCError` as the outbox's error: transient or final by its status."""
    message = f"{what}: {exc.status.name}: {exc.message}"
    return TargetError(message) if exc.status in RETRIABLE_CODES else TargetRejected(message)


class TemporalTarget(Target):
    """Delivers actions to one Temporal namespace (see the module docstring)."""

    def __init__(
        self,
        name: str = "temporal",
        address: str = "127.0.0.1:7233",
        *,
        namespace: str = "default",
        task_queue: str = "kec",
        workflows: Mapping[str, str] | None = None,
        api_key: str | None = None,
        tls: bool = False,
        id_prefix: str = "kec-",
        update: str = "task_action",
        stop: Literal["cancel", "terminate"] = "cancel",
        rpc_timeout: float = 10.0,
        concurrency: int = 8,
        template: Template | None = None,
    ) -> None:
        if not address or ":" not in address:
            raise ConfigError(f"temporal target {name!r}: address must be host:port: {address!r}")
        if rpc_timeout <= 0:
            raise ConfigError(f"temporal target {name!r}: rpc_timeout must be positive")
        self.name = name
        self.concurrency = concurrency
        self._template = template
        self._address = address
        self._namespace = namespace
        self._task_queue = task_queue
        self._workflows = dict(workflows or {})
        self._api_key = api_key
        self._tls = tls
        self._id_prefix = id_prefix
        self._update = update
        self._stop = stop
        self._rpc_timeout = timedelta(seconds=rpc_timeout)
        self._what = f"temporal target {name} ({address}, namespace {namespace})"
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._connecting: asyncio.Lock | None = None  # made on the loop, used only there

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._loop is not None:
                return
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name=f"temporal-{self.name}", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = self._client = self._connecting = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()

    # -- delivery -------------------------------------------------------------------------

    def workflow_id(self, action: Action) -> str:
        """The id of the workflow ``action`` starts (stable across resends)."""
        return temporal_workflow_id(self._id_prefix, action)

    def workflow_type(self, action: Action) -> str:
        workflow = action.workflow or ""
        return self._workflows.get(workflow, workflow)

    def deliver(self, action: Action) -> None:
        self._run(self._deliver(action), action)

    def _run(self, coroutine: Coroutine[Any, Any, None], action: Action) -> None:
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise TargetError(f"{self._what} is not open")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        # The SDK bounds each call by rpc_timeout; a stop does at most three calls.
        limit = 3 * self._rpc_timeout.total_seconds() + 5
        try:
            future.result(timeout=limit)
        except TimeoutError as exc:
            future.cancel()
            raise TargetError(
                f"{self._what}: action {action.action_id} got no answer in {limit:g}s"
            ) from exc

    async def _deliver(self, action: Action) -> None:
        what = f"{self._what}, action {action.action_id} ({action.kind.value})"
        try:
            client = await self._connected()
            if action.kind is ActionKind.START_WORKFLOW:
                await self._start(client, action)
            elif action.kind is ActionKind.STOP_WORKFLOW:
                await self._stop_workflow(client, action, what)
            elif action.kind in TASK_ACTIONS:
                await self._task(client, action, what)
            else:
                raise TargetRejected(f"{what}: the temporal target does not take this action")
        except RPCError as exc:
            raise rpc_error(what, exc) from exc
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            raise TargetError(f"{what}: the update got no answer in time") from exc

    async def _connected(self) -> Client:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            return self._client or await self._connect()

    async def _connect(self) -> Client:
        if self._client is None:
            try:
                self._client = await Client.connect(
                    self._address,
                    namespace=self._namespace,
                    api_key=self._api_key,
                    tls=self._tls,
                    # The outbox retries with its own backoff: fail fast here.
                    retry_config=RetryConfig(
                        max_elapsed_time_millis=int(self._rpc_timeout.total_seconds() * 1000)
                    ),
                    connect_timeout=self._rpc_timeout,
                    identity=f"kafka-event-connector/{self.name}",
                )
            except RuntimeError as exc:  # the SDK's core reports a failed connect so
                raise TargetError(f"{self._what}: cannot connect: {exc}") from exc
        return self._client

    async def _start(self, client: Client, action: Action) -> None:
        try:
            await client.start_workflow(
                self.workflow_type(action),
                start_input(action, self._template),
                id=self.workflow_id(action),
                task_queue=self._task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=self._rpc_timeout,
            )
        except WorkflowAlreadyStartedError:
            return  # a resend: that workflow id exists, open or closed

    async def _stop_workflow(self, client: Client, action: Action, what: str) -> None:
        handle = client.get_workflow_handle(execution_of(action, what))
        reason = f"kafka-event-connector action {action.action_id} (rule {action.rule})"
        try:
            if self._stop == "terminate":
                await handle.terminate(reason=reason, rpc_timeout=self._rpc_timeout)
            else:
                await handle.cancel(reason=reason, rpc_timeout=self._rpc_timeout)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND and await self._closed(handle):
                return  # nothing left to stop (this action's earlier delivery, or its end)
            raise

    async def _task(self, client: Client, action: Action, what: str) -> None:
        handle = client.get_workflow_handle(execution_of(action, what))
        try:
            update = await handle.start_update(
                self._update,
                task_input(action),
                id=action.action_id,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                rpc_timeout=self._rpc_timeout,
            )
            # A validator's refusal comes back as the update's (known) outcome; a result
            # still being computed is no concern of delivery: accepted is applied.
            with contextlib.suppress(WorkflowUpdateRPCTimeoutOrCancelledError):
                await update.result(rpc_timeout=OUTCOME_PROBE)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            detail = getattr(cause, "message", None) or str(cause)
            raise TargetRejected(
                f"{what}: the workflow refused update {self._update!r}: {detail}"
            ) from exc
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND and await self._applied(handle, action):
                return  # the workflow closed after accepting this very update
            raise

    @staticmethod
    async def _closed(handle: WorkflowHandle[Any, Any]) -> bool:
        try:
            description = await handle.describe()
        except RPCError:
            return False
        return description.status not in (None, WorkflowExecutionStatus.RUNNING)

    @staticmethod
    async def _applied(handle: WorkflowHandle[Any, Any], action: Action) -> bool:
        """Whether the (closed) workflow's history holds the update with the action's id."""
        try:
            async for event in handle.fetch_history_events():
                if event.HasField("workflow_execution_update_accepted_event_attributes"):
                    accepted = event.workflow_execution_update_accepted_event_attributes
                    if accepted.accepted_request.meta.update_id == action.action_id:
                        return True
        except RPCError:
            return False
        return False
