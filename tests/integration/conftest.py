"""Fixtures of the integration tests beyond the session's broker and PostgreSQL."""

from tests.integration.secure_postgres import secure_pg, tls_pg_store_url
from tests.nemesis.fixtures import _proxied_kafka_session, pg_proxy, proxied_kafka

__all__ = ["_proxied_kafka_session", "pg_proxy", "proxied_kafka", "secure_pg", "tls_pg_store_url"]
