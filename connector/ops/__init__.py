"""Operator tools behind ``send``, ``tail``, ``status``, ``replay`` and ``dlq``.

One module per command; each takes its collaborators explicitly (a librdkafka client
configuration, the group id, the topic → namespace map, an opened checkpoint store), so
the CLI wrappers in :mod:`connector.commands.ops_cmds` only resolve options and print.
Nothing here joins the connector's consumer group or commits offsets for it.
"""
