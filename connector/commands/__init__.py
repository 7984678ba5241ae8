"""The ``event-connector`` subcommands, one module per area; ``connector.cli`` registers them.

Each module imports its heavy dependencies inside the command body, so ``--help`` stays fast.
"""
