"""Configured values that are secrets by their names, kept out of everything printed.

Free-form settings (webhook ``headers``, a command target's ``env``, Kafka ``properties``)
hold credentials as often as not: ``Authorization: Bearer …``, ``API_KEY``,
``sasl.oauthbearer.client.secret``. A value whose name holds one of :data:`SECRET_WORDS`
(any case) is kept as a :class:`~pydantic.SecretStr`: it prints as ``**********`` in a
repr, a log line, an error message and ``model_dump(mode="json")``, and is revealed only
where a client needs it (:func:`reveal`). Guessing by name errs on the side of hiding:
a ``KEY_PREFIX`` is hidden too, which costs nothing but a starred value in output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, TypeVar

from pydantic import AfterValidator, SecretStr, WithJsonSchema

__all__ = [
    "SECRET_WORDS",
    "HiddenProperties",
    "HiddenStrings",
    "hide_secrets",
    "is_secret_name",
    "redact",
    "reveal",
    "secret_values",
]

SECRET_WORDS: Final = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "key",
    "credential",
    "auth",  # Authorization, Proxy-Authorization, X-Auth-…
    "cookie",
    "private",
    "dsn",
    "pem",  # ssl.key.pem, ssl.certificate.pem's key half
)

V = TypeVar("V")


def is_secret_name(name: str) -> bool:
    """Whether a setting called ``name`` holds a secret, judged by its name alone."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def hide_secrets(values: dict[str, Any]) -> dict[str, Any]:
    """Each string value whose name says secret as a SecretStr (a pydantic validator)."""
    return {
        name: SecretStr(value) if isinstance(value, str) and is_secret_name(name) else value
        for name, value in values.items()
    }


def reveal(values: Mapping[str, V | SecretStr]) -> dict[str, V | str]:
    """The mapping with every secret revealed: for a client, never for output."""
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in values.items()
    }


def secret_values(values: Mapping[str, object]) -> list[str]:
    """The revealed secrets of a mapping (to :func:`redact` them from foreign messages)."""
    return [v.get_secret_value() for v in values.values() if isinstance(v, SecretStr)]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each (non-empty) secret replaced by stars.

    For messages we did not write (a client library's error may quote a setting's value).
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "**********")
    return text


_STRING_MAP: Final = {"type": "object", "additionalProperties": {"type": "string"}}
_SCALAR_MAP: Final = {
    "type": "object",
    "additionalProperties": {"type": ["string", "integer", "number", "boolean"]},
}

HiddenStrings = Annotated[
    dict[str, str | SecretStr], AfterValidator(hide_secrets), WithJsonSchema(_STRING_MAP)
]
"""``name -> text`` (headers, environment variables), secrets by name as SecretStr."""

HiddenProperties = Annotated[
    dict[str, str | int | float | bool | SecretStr],
    AfterValidator(hide_secrets),
    WithJsonSchema(_SCALAR_MAP),
]
"""``name -> scalar`` (librdkafka properties), secret strings by name as SecretStr."""
