"""AIFlow-style notification client on Kafka: ``send_event`` and listeners (docs/architecture.md).

:class:`NotificationClient` plays AIFlow's ``AIFlowNotificationClient``: tasks send events
with :meth:`~NotificationClient.send_event` and listen to them with
:meth:`~NotificationClient.register_listener` and a :class:`ListenerProcessor`::

    from connector.notification import Event, ListenerProcessor, NotificationClient

    class Counter(ListenerProcessor):
        def __init__(self) -> None:
            self.counter = 0

        def process(self, events: list[Event]) -> None:
            self.counter += len(events)

    with NotificationClient("localhost:9092") as client:
        listener_id = client.register_listener(Counter(), ["expect_key"])
        client.send_event("expect_key", "This is a custom message.")
        ...
        client.unregister_listener(listener_id)

Modules: :mod:`.client` (the client), :mod:`.listener` (processor contract, listener
thread, start offsets), :mod:`.env` (namespace/sender/context from arguments or
environment); namespace → topic and topic creation are :mod:`connector.topics`, and
Kafka calls retried with errors wrapped :mod:`kec.kafka`, both shared with
the rest of the connector.

Topics. Namespace ``N`` lives in topic ``{topic_prefix}N`` (prefix ``"events."``), or in
``topics[N]`` when the constructor's ``topics`` mapping names one. A missing topic is
created on first use (``partitions``, default 3; ``replication_factor``, default the
broker's) because brokers commonly run with ``auto.create.topics.enable=false``; with
``create_topics=False`` a missing topic raises :class:`~kec.errors.KafkaClientError`
naming it instead. :meth:`~NotificationClient.ensure_topic` does the same up front.

Inside a task, the client reads these environment variables when it is constructed
(explicit arguments, to the constructor or to ``send_event``, win):

``KEC_NAMESPACE``  the namespace when the constructor gets none (else ``"default"``);
``KEC_SENDER``     the sender of every event (the task's name);
``KEC_CONTEXT``    the context of every event (the workflow execution id), which task
                   rules use to act only on tasks of the same execution.

Sending. One idempotent producer (``enable.idempotence=true``, ``acks=all``) per client.
``send_event`` returns once the broker acknowledged the record, with the Event's topic,
partition and offset; no acknowledgement within ``delivery_timeout`` raises
``KafkaClientError``. The record may still have been written then: resending with the
same ``event_id`` lets every consumer deduplicate it.

Listening. ``register_listener`` resolves where to start before it returns, then a thread
of its own reads the namespace's topic with its own consumer (partitions *assigned*, not
subscribed: no rebalance wait; one live listener per group id) and hands
``process(events)`` the batches of events whose key matches (exact or glob) and whose
``namespace`` header is the listener's, so two namespaces sharing a topic stay apart. A
record without a ``namespace`` header (written by another producer) belongs to its
topic's namespace, or to none when the ``topics`` mapping puts several namespaces in that
topic: it is logged and skipped rather than handed to all of them. Per batch, in this
order:

1. ``consume`` up to ``max_batch`` records; undecodable records are logged with their
   ``topic[partition]@offset`` and skipped;
2. ``process(events)``; when it raises, the error is logged and the *same* batch is
   retried with exponential backoff (each wait at most ``retry_backoff_max`` seconds) until
   it succeeds or the listener is unregistered — at-least-once to the processor;
3. commit the batch's next offsets to the listener's group, synchronously. A failed commit
   is retried with the next batch; a batch not yet processed is never committed.

Start position, first match wins: ``begin_time`` (ms epoch: the first record at or after
it), ``begin_offset`` (one offset for every partition, or a ``{partition: offset}``
mapping; partitions left out start as below), the group's committed offset, else the end
of the partition as of registration — so every event sent after ``register_listener``
returned is seen. Offsets are clamped into the partition's current range and committed
to the group at once, so a listener stopped before it read anything resumes there.
Without ``group_id`` the group is derived from the namespace, the processor's class and
the keys, so the same listener registered again (even in another process) resumes where
it stopped.

``unregister_listener`` stops the thread and waits up to ``stop_timeout`` for it; the
thread closes its consumer. A processor still busy after that is logged and left to
finish in its (daemon) thread; its batch is committed only if it returns successfully.
:meth:`~NotificationClient.listener_group` tells which group a listener commits to.

Limits: partitions added to a topic after registration are read only by listeners
registered later; "one live listener per group" is checked within one client, not across
processes (two would both read everything and commit over each other).
"""

from __future__ import annotations

from connector.notification.client import NotificationClient
from connector.notification.env import ENV_CONTEXT, ENV_NAMESPACE, ENV_SENDER
from connector.notification.listener import ListenerProcessor
from connector.topics import DEFAULT_TOPIC_PREFIX
from kec.event import Event

__all__ = [
    "DEFAULT_TOPIC_PREFIX",
    "ENV_CONTEXT",
    "ENV_NAMESPACE",
    "ENV_SENDER",
    "Event",
    "ListenerProcessor",
    "NotificationClient",
]
