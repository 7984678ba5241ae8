"""The base of every model read from a config file: the settings sections, the targets'
settings and the rules. A leaf: it imports pydantic only, so that the rules
(:mod:`connector.rules`) and the configuration (:mod:`connector.config`) share it
without importing each other."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = ["ConfigModel", "NonEmpty"]

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
"""A string of at least one character."""


class ConfigModel(BaseModel):
    """Unknown keys are refused and a model never changes once read (compiled rules and
    the running service rely on that).

    A field may have a validation alias (a rule's ``in`` and ``json``, Python keywords):
    YAML uses the alias, Python code and type checkers the field name (``in_``). Attribute
    docstrings become the fields' descriptions in ``event-connector schema``.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )
