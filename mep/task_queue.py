"""Whether a user endpoint that exited still has work waiting for it.

The broker knows: tasks published to the endpoint's queue and not yet taken
(including any it held unacked, which return to the queue when it goes) are
the queue's message count. Asking is one passive declare, on a short-lived
channel of the manager's own connection (a passive declare needs no
permission; a missing queue closes only that channel). None means the broker
could not be asked.
"""

from __future__ import annotations

import logging

import pika
import pika.exceptions

from wire.redaction import redact

log = logging.getLogger(__name__)


def waiting_tasks(connection: pika.BlockingConnection | None, queue: str) -> int | None:
    """How many tasks wait in ``queue``, or None if the broker cannot tell us."""
    if connection is None or not connection.is_open:
        return None
    channel = None
    try:
        channel = connection.channel()
        return channel.queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.AMQPError as e:
        log.warning("cannot ask the broker about %s: %s", queue, redact(str(e)))
        return None
    finally:
        if channel is not None and channel.is_open:
            channel.close()
