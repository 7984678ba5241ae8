"""Fixtures of the chaos tests beyond the session's broker and PostgreSQL."""

from tests.chaos.receiver import receiver

__all__ = ["receiver"]
