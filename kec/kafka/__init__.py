"""The Kafka seam: every use of the client library (confluent-kafka) goes through here.

* :mod:`kec.kafka.settings` — :class:`Connection` (servers, security, properties) and the
  settings the guarantees rest on; plain data, loads no client;
* :mod:`kec.kafka.clients` — builds every consumer, producer and admin client, routes
  librdkafka's log lines, retries transient failures (:func:`retried`), :func:`reach`;
* :mod:`kec.kafka.errors` — the one place a Kafka failure is classified (transient,
  fatal, end of partition, unreachable...) and mapped to the
  :class:`~kec.errors.ConnectorError` tree;
* :mod:`kec.kafka.registry` — records written with a registered schema (Avro,
  Protobuf, JSON Schema), decoded with the schema registry's client;
* :mod:`kec.kafka.topics` — what the cluster says about topics (partitions, descriptions)
  and creating them; the client's partition class as :class:`KafkaTopicPartition`, while
  the project's own partitions are :data:`TP` tuples.

Callers import the names they need from ``kec.kafka``. The client library is loaded on
first use of a name that needs it, so importing :mod:`kec.kafka.settings` (as the
configuration does) loads no client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kec.event import TP as TP
from kec.kafka.settings import BOOTSTRAP as BOOTSTRAP
from kec.kafka.settings import CONSUMER_FIXED as CONSUMER_FIXED
from kec.kafka.settings import PIPELINE_FIXED as PIPELINE_FIXED
from kec.kafka.settings import PRODUCER_FIXED as PRODUCER_FIXED
from kec.kafka.settings import Connection as Connection
from kec.kafka.settings import fixed as fixed

if TYPE_CHECKING:
    from kec.kafka.clients import ATTEMPT_TIMEOUT as ATTEMPT_TIMEOUT
    from kec.kafka.clients import LIBRDKAFKA_LOG as LIBRDKAFKA_LOG
    from kec.kafka.clients import REACH_TIMEOUT as REACH_TIMEOUT
    from kec.kafka.clients import AdminClient as AdminClient
    from kec.kafka.clients import Consumer as Consumer
    from kec.kafka.clients import Message as Message
    from kec.kafka.clients import Producer as Producer
    from kec.kafka.clients import admin as admin
    from kec.kafka.clients import close_producer as close_producer
    from kec.kafka.clients import consumer as consumer
    from kec.kafka.clients import fetch_batch as fetch_batch
    from kec.kafka.clients import kafka_new as kafka_new
    from kec.kafka.clients import producer as producer
    from kec.kafka.clients import reach as reach
    from kec.kafka.clients import reader as reader
    from kec.kafka.clients import retried as retried
    from kec.kafka.clients import watermarks as watermarks
    from kec.kafka.errors import CAUSES as CAUSES
    from kec.kafka.errors import UNREACHABLE as UNREACHABLE
    from kec.kafka.errors import UNREACHABLE_DELIVERY as UNREACHABLE_DELIVERY
    from kec.kafka.errors import KafkaError as KafkaError
    from kec.kafka.errors import KafkaException as KafkaException
    from kec.kafka.errors import Unreachable as Unreachable
    from kec.kafka.errors import already_exists as already_exists
    from kec.kafka.errors import checked as checked
    from kec.kafka.errors import code as code
    from kec.kafka.errors import create_refusal as create_refusal
    from kec.kafka.errors import delivery_error as delivery_error
    from kec.kafka.errors import error_of as error_of
    from kec.kafka.errors import error_text as error_text
    from kec.kafka.errors import is_eof as is_eof
    from kec.kafka.errors import is_fatal as is_fatal
    from kec.kafka.errors import not_authorized as not_authorized
    from kec.kafka.errors import refused_resource as refused_resource
    from kec.kafka.errors import refused_setting as refused_setting
    from kec.kafka.errors import rejected as rejected
    from kec.kafka.errors import transient as transient
    from kec.kafka.errors import unknown_topic as unknown_topic
    from kec.kafka.errors import unreachable as unreachable
    from kec.kafka.errors import wrapped as wrapped
    from kec.kafka.topics import OFFSET_BEGINNING as OFFSET_BEGINNING
    from kec.kafka.topics import OFFSET_END as OFFSET_END
    from kec.kafka.topics import OFFSET_INVALID as OFFSET_INVALID
    from kec.kafka.topics import OFFSET_STORED as OFFSET_STORED
    from kec.kafka.topics import KafkaTopicPartition as KafkaTopicPartition
    from kec.kafka.topics import TopicInfo as TopicInfo
    from kec.kafka.topics import TopicRefused as TopicRefused
    from kec.kafka.topics import create as create
    from kec.kafka.topics import describe as describe
    from kec.kafka.topics import kafka_tp as kafka_tp
    from kec.kafka.topics import partition_ids as partition_ids

# The modules that load the client library, looked through in order for a name.
_LOADING = ("kec.kafka.errors", "kec.kafka.clients", "kec.kafka.topics")


def __getattr__(name: str) -> Any:
    for module_name in _LOADING:
        module = importlib.import_module(module_name)
        if name in module.__all__:
            value = getattr(module, name)
            globals()[name] = value  # found once, then an ordinary attribute
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
