"""The floor: the vocabulary every other package of kafka-event-connector shares.

Nothing here imports ``connector``, ``listeners`` or ``checkpoint``; they all import
from here. Importing this package loads no Kafka or HTTP client (:mod:`kec.kafka` loads
confluent-kafka on first use of a client, error or topic name; its settings load none).

* :mod:`kec.errors` — the exception tree, rooted at ``ConnectorError``;
* :mod:`kec.event` — ``Event``, its identity and header names;
* :mod:`kec.codec` — Kafka record <-> ``Event``;
* :mod:`kec.action` — ``Action`` with its deterministic id;
* :mod:`kec.evaluation` — the rule evaluator protocol the pipeline drives;
* :mod:`kec.kafka` — the Kafka seam: the only importer of confluent-kafka; builds every
  client (``clients``), classifies every failure (``errors``), reads topics' partitions
  (``topics``); ``kec.kafka.settings`` holds the ``Connection`` and the settings the
  guarantees rest on (no client loaded);
* :mod:`kec.faults` — crash points for the chaos tests.
"""
