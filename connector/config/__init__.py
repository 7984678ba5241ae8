"""The connector's YAML configuration: :func:`load_config` and the models it returns.

A file, with every section (only ``kafka`` and ``namespaces`` are required)::

    kafka:
      bootstrap_servers: ${KAFKA_BOOTSTRAP_SERVERS:-localhost:9092}
      security_protocol: SASL_SSL          # optional: SASL and SSL settings
      sasl_mechanism: SCRAM-SHA-512
      sasl_username: connector
      sasl_password: ${KAFKA_PASSWORD}     # a secret: never printed
      properties: {client.rack: eu-west-1a}   # passed through to librdkafka
    group_id: event-connector
    listener_group_id: ray-listeners       # connector.queue_listener's (KEC_CONFIG=this
                                           # file); default <group_id>-listener
    topic_prefix: events.                  # namespace N reads topic events.N unless told
    namespaces:
      default: {}                          # reads events.default
      orders: {topics: [orders, returns]}  # a topic belongs to one namespace
    checkpoint: {backend: sqlite, path: checkpoints.db,   # relative to KEC_DATA_DIR, else here
                 retention_days: 14}       # prune older events (default: keep all)
    dead_letter_topic: events-dlq
    topic_creation: {enabled: true,        # create missing topics (run, send, gateway)
                     partitions: 3, replication_factor: -1}   # -1: the broker's default
    pipeline: {batch_size: 1000, linger_ms: 10, outbox_max_pending: 100000,
               instance_id: connector-1,
               match_max_value_length: 1048576,   # longer values fail value conditions
               match_max_json_depth: 128}         # deeper JSON fails json predicates
    retry: {max_attempts: 8, initial_backoff_seconds: 1, max_backoff_seconds: 300}
    targets:                               # connector.targets specs; `log` always exists
      deploy: {type: command, argv: [echo, deploy], stdin: true,
               env: {STAGE: prod}, inherit_env: ["AWS_*"]}   # else a minimal environment
    rules:                                 # connector.rules.Rule
      - {name: start-wf, key: start, action: start, workflow: workflow_1, target: deploy}
    http: {host: 0.0.0.0, port: 8000, token: "${GATEWAY_TOKEN}", strict: false,
           max_body_bytes: 1048576, max_json_depth: 64,    # 413 / 400 beyond these
           max_connections: 1000, header_timeout_seconds: 20}
                                           # HTTPS: tls_cert_file, tls_key_file (PEM)
    metrics: {host: 0.0.0.0, port: 9464}
    admin: {host: 0.0.0.0, port: 8081, token: "${ADMIN_TOKEN}"}   # the admin API and console

``${NAME}`` and ``${NAME:-default}`` are replaced in string values before validation.
"""

from connector.config.loader import ConfigFileError, load_config
from connector.config.models import (
    DEFAULT_TARGET,
    AdminConfig,
    CheckpointConfig,
    ConnectorConfig,
    HttpConfig,
    KafkaSettings,
    MetricsConfig,
    NamespaceConfig,
    PipelineConfig,
    RetryConfig,
    TopicCreationConfig,
)

__all__ = [
    "DEFAULT_TARGET",
    "AdminConfig",
    "CheckpointConfig",
    "ConfigFileError",
    "ConnectorConfig",
    "HttpConfig",
    "KafkaSettings",
    "MetricsConfig",
    "NamespaceConfig",
    "PipelineConfig",
    "RetryConfig",
    "TopicCreationConfig",
    "load_config",
]
