"""The floor: the vocabulary every other package of kafka-event-connector shares.

Nothing here imports ``connector``, ``listeners`` or ``checkpoint``; they all import
from here. Importing this package loads no Kafka or HTTP client (:mod:`kec.kafka` loads
confluent-kafka when it is imported itself).

* :mod:`kec.errors` — the exception tree, rooted at ``ConnectorError``;
* :mod:`kec.event` — ``Event``, its identity and header names;
* :mod:`kec.codec` — Kafka record <-> ``Event``;
* :mod:`kec.action` — ``Action`` with its deterministic id;
* :mod:`kec.evaluation` — the rule evaluator protocol the pipeline drives;
* :mod:`kec.kafka` — builds every Kafka client the project uses;
* :mod:`kec.kafka_fixed` — the client settings the guarantees rest on (no client loaded);
* :mod:`kec.faults` — crash points for the chaos tests.
"""
