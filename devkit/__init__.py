"""Development tooling: what a checkout of kafka-event-connector needs beside the product.

* :mod:`devkit.broker` — a local Apache Kafka broker (``event-connector dev-broker``), and
  the choice of broker for tests and the demo;
* :mod:`devkit.security` — the local broker's SASL/TLS modes and the session's certificates;
* :mod:`devkit.postgres` — a throwaway PostgreSQL server, and scratch databases;
* :mod:`devkit.containers` — the same two in Docker, and which source to use;
* :mod:`devkit.images` — the project's Docker images (``make images``);
* :mod:`devkit.demo` — ``event-connector demo`` (``make demo``).

devkit may import the product (kec, checkpoint, listeners, connector); the product never
imports devkit (tests/unit/test_layering.py checks both).
"""
