"""``python -m connector`` is the ``event-connector`` command."""

from connector.cli import main

main()
