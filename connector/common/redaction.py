"""Secrets kept out of everything printed: configured values that are secrets by their
names, and the secret parts of URLs.

Free-form settings (webhook ``headers``, a command target's ``env``, Kafka ``properties``)
hold credentials as often as not: ``Authorization: Bearer …``, ``API_KEY``,
``sasl.oauthbearer.client.secret``. A value whose name holds one of :data:`SECRET_WORDS`
(any case) is kept as a :class:`~pydantic.SecretStr`: it prints as ``**********`` in a
repr, a log line, an error message and ``model_dump(mode="json")``, and is revealed only
where a client needs it (:func:`reveal`). Guessing by name errs on the side of hiding:
a ``KEY_PREFIX`` is hidden too, which costs nothing but a starred value in output.

URLs carry secrets of their own: ``user:password@``, a ``?token=`` or ``?sig=``, and the
path of a hosted webhook (``/services/T000/B000/<secret>``). :func:`redact_url` is the one
way a target shows a URL to people (log lines, error messages, the dead-letter table), and
:func:`url_secrets` gives the parts to :func:`redact` from text quoted from elsewhere (an
answer's body that echoes the request, a client library's error).
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, TypeVar

from pydantic import AfterValidator, SecretStr, WithJsonSchema

__all__ = [
    "SECRET_WORDS",
    "HiddenProperties",
    "HiddenStrings",
    "RedactingFilter",
    "hide_secrets",
    "is_secret_name",
    "redact",
    "redact_known",
    "redact_logs",
    "redact_url",
    "reveal",
    "secret_values",
    "url_secrets",
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


# Secrets this process was configured with (redact_logs): starred in every log line.
_KNOWN: list[str] = []
_KNOWN_LOCK = threading.Lock()
# Shorter values are too likely to be ordinary words of a message to be starred in it.
_MIN_KNOWN = 4


def redact_known(text: str) -> str:
    """``text`` without the secrets given to :func:`redact_logs`."""
    known = _KNOWN
    return redact(text, known) if known and text else text


class RedactingFilter(logging.Filter):
    """Stars the known secrets (:func:`redact_logs`) in a record's message and traceback,
    whichever library logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _KNOWN:
            return True
        message = record.getMessage()
        cleaned = redact_known(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_known(record.exc_text)
        return True


def redact_logs(secrets: Iterable[str]) -> None:
    """From now on, no log line of this process shows any of ``secrets``: a
    :class:`RedactingFilter` on every handler of the root logger (installed once), and
    :func:`redact_known` for messages printed another way."""
    with _KNOWN_LOCK:
        fresh = {s for s in secrets if len(s) >= _MIN_KNOWN} - set(_KNOWN)
        _KNOWN[:] = sorted({*_KNOWN, *fresh}, key=len, reverse=True)
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


ELIDED: Final = "…"
UNREADABLE_URL: Final = "(unreadable URL)"
# Parts of a URL shorter than this are words and numbers (v1, api, json, 1), not secrets:
# starring them in quoted text would garble it. A path segment must be longer still to be
# taken for a token ("services", "webhooks" are not); a password is hidden at any length.
_MIN_SECRET_PART = 4
_MIN_SECRET_SEGMENT = 9


def redact_url(url: object) -> str:
    """``url`` as shown to people: ``scheme://host[:port]``, then ``/…`` for any path
    beyond ``/``, then ``?name=…&…`` (names kept, values elided). Userinfo and fragment are
    left out. Never raises: what cannot be parsed is shown as ``(unreadable URL)``.

    ``https://u:p@hooks.example.com/services/T0/B0/XYZ?sig=abc`` is shown as
    ``https://hooks.example.com/…?sig=…``.
    """
    try:
        parts = urllib.parse.urlsplit(str(url).strip())
    except ValueError:
        return UNREADABLE_URL
    shown = f"{parts.scheme}:" if parts.scheme else ""
    if parts.netloc:
        shown += "//" + parts.netloc.rpartition("@")[2]
    if parts.path.strip("/"):
        shown += f"/{ELIDED}" if parts.netloc or parts.path.startswith("/") else ELIDED
    if parts.query:
        items = (item.partition("=") for item in parts.query.split("&") if item)
        shown += "?" + "&".join(f"{name}={ELIDED}" if eq else ELIDED for name, eq, _ in items)
    return shown or ELIDED


def url_secrets(url: object) -> list[str]:
    """The parts of ``url`` to :func:`redact` from text quoted from elsewhere: user and
    password, the path (and its longer segments), query values; raw and percent-decoded."""
    try:
        parts = urllib.parse.urlsplit(str(url).strip())
        password = parts.password
        username = parts.username
    except ValueError:
        return []
    found: set[str] = set()
    if password:
        found.add(password)
        found.add(urllib.parse.unquote(password))
    candidates = [username or ""]
    if parts.path.strip("/"):
        candidates.append(parts.path)
        candidates.extend(s for s in parts.path.split("/") if len(s) >= _MIN_SECRET_SEGMENT)
    for item in parts.query.split("&"):
        name, eq, value = item.partition("=")
        candidates.append(value if eq else name)  # a bare ?item is a value
    candidates.append(parts.fragment)
    for part in candidates:
        for form in (part, urllib.parse.unquote_plus(part)):
            if len(form) >= _MIN_SECRET_PART:
                found.add(form)
    return sorted(found)


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
