"""``make demo``: the round trip through a real broker, on embedded defaults."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from connector.devbroker import provide_kafka
from connector.errors import KafkaClientError

EVENTS = [("key", "This is a custom message."), ("order-1", "created"), ("order-1", "paid")]


def run_demo(say: Callable[[str], None]) -> None:
    with provide_kafka() as cluster:
        say(f"Kafka {cluster.version} ({cluster.kind}) at {cluster.bootstrap_servers}")
        topic = f"demo-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[
            topic
        ].result(timeout=30)
        producer = Producer(
            {"bootstrap.servers": cluster.bootstrap_servers, "enable.idempotence": True}
        )
        for key, value in EVENTS:
            producer.produce(topic, key=key, value=value)
        if producer.flush(30) != 0:
            raise KafkaClientError("the demo events were not acknowledged within 30s")
        say(f"sent {len(EVENTS)} events to {topic}")
        consumer = Consumer(
            {
                "bootstrap.servers": cluster.bootstrap_servers,
                "group.id": f"demo-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([topic])
        seen = 0
        try:
            while seen < len(EVENTS):
                msg = consumer.poll(30)
                if msg is None:
                    raise KafkaClientError(f"read {seen} of {len(EVENTS)} events within 30s")
                if msg.error():
                    raise KafkaClientError(str(msg.error()))
                seen += 1
                say(
                    f"read  {msg.topic()}[{msg.partition()}]@{msg.offset()} "
                    f"key={msg.key()!r} value={msg.value()!r}"
                )
                consumer.commit(message=msg, asynchronous=False)
        finally:
            consumer.close()
        del producer, admin  # release the clients before the broker stops
        say(f"round trip done: {seen} events sent, read and committed")
