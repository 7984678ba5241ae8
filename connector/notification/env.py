"""Who is sending: the namespace, sender and context of a client's events.

Inside a task the workflow engine tells the task who it is through environment variables;
explicit arguments (to the client's constructor, or to ``send_event``) always win:

``KEC_NAMESPACE``  the namespace when the constructor gets none (else ``"default"``);
``KEC_SENDER``     the sender of every event (the task's name);
``KEC_CONTEXT``    the context of every event (the workflow execution id), which task
                   rules use to act only on tasks of the same execution.

The variables are read once, when the client is constructed, from ``environ`` when given
(tests, or an engine that hands the task a mapping) else from ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from kec.event import DEFAULT_NAMESPACE

__all__ = ["ENV_CONTEXT", "ENV_NAMESPACE", "ENV_SENDER", "Identity"]

ENV_NAMESPACE = "KEC_NAMESPACE"
ENV_SENDER = "KEC_SENDER"
ENV_CONTEXT = "KEC_CONTEXT"


@dataclass(frozen=True, slots=True)
class Identity:
    """The defaults stamped on every event a client sends (empty strings count as unset)."""

    namespace: str
    sender: str | None
    context: str | None

    @classmethod
    def resolve(
        cls,
        namespace: str | None = None,
        sender: str | None = None,
        context: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Identity:
        """Explicit arguments, else the environment variables, else the defaults."""
        env = os.environ if environ is None else environ
        return cls(
            namespace=namespace or env.get(ENV_NAMESPACE) or DEFAULT_NAMESPACE,
            sender=sender or env.get(ENV_SENDER) or None,
            context=context or env.get(ENV_CONTEXT) or None,
        )
