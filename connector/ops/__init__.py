"""Operator tools behind ``send``, ``tail``, ``status``, ``replay``, ``dlq`` and
``partitions``, and the one operations job ``run`` does itself: pruning the store
(:mod:`~connector.ops.retention`).

One module per command; each takes its collaborators explicitly (a librdkafka client
configuration, the group id, the topic → namespace map, an opened checkpoint store), so
the CLI wrappers in :mod:`connector.commands.ops_cmds` only resolve options and print.
Nothing here joins the connector's consumer group or commits offsets for it.
"""
