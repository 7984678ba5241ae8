"""kafka-event-connector: the service.

Public API (grows with the modules): the exception tree in :mod:`connector.errors` and the
development broker in :mod:`connector.devbroker`.
"""

from connector.errors import ConnectorError

__all__ = ["ConnectorError"]
