"""Broker URLs in text and logs, with their passwords hidden.

Broker URLs carry credentials (``amqp://user:secret@host``). :func:`redact`
and every log record passed through :class:`RedactingFilter` show them as
``amqp://user:***@host``. Apart from :mod:`wire.amqp` so that a process can
guard its log before it loads the broker client.
"""

from __future__ import annotations

import logging
import re

_URL_SECRET = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]*@")


def redact(text: str) -> str:
    """Hide the password of every URL in ``text``."""
    return _URL_SECRET.sub(r"\1***@", text)


class RedactingFilter(logging.Filter):
    """A handler filter that scrubs URL passwords from messages and tracebacks.

    Attach it to handlers (not loggers) so records propagated from any library,
    pika included, pass through it.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default root)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
