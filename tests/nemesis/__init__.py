"""The test suite's nemesis: fault-injecting TCP proxies on loopback.

:class:`~tests.nemesis.proxy.Proxy` sits between a client and a server (Kafka, or any TCP
service) and delays, blackholes, refuses or resets connections;
:class:`~tests.nemesis.pg.PgProxy` sits in front of PostgreSQL and can also swallow COMMIT
acknowledgements (the server committed, the client saw its connection drop). Both run in
the test process (a thread with its own event loop, synchronous methods);
:class:`~tests.nemesis.proxy.RemoteProxy` runs one as a process of its own
(``python -m tests.nemesis --help``). :mod:`tests.nemesis.fixtures` has the pytest
fixtures, among them a Kafka broker that advertises a proxy's address.

    proxy = PgProxy(upstream=("127.0.0.1", 5432)).start()
    conn = psycopg.connect(proxy.dsn(dsn), autocommit=True)
    proxy.swallow_commit_acks(1)
    with conn.transaction():  # COMMIT raises OperationalError; the row is committed
        conn.execute("INSERT ...")
    proxy.stop()
"""

from tests.nemesis.pg import PgProxy
from tests.nemesis.proxy import ControlError, Proxy, RemoteProxy

__all__ = ["ControlError", "PgProxy", "Proxy", "RemoteProxy"]
