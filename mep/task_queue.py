"""Whether a user endpoint that exited still has work waiting for it.

The broker knows: tasks published to the endpoint's queue and not yet taken
(including any it held unacked, which return to the queue when it goes) are
the queue's message count. Asking is one passive declare on the endpoint's own
credentials; None means the broker could not be asked.
"""

from __future__ import annotations

import logging

import pika.exceptions

from wire.amqp import connect, redact
from wire.errors import WireError
from wire.queue_info import ReadQueueInfo

log = logging.getLogger(__name__)


def waiting_tasks(queue: ReadQueueInfo, amqp_port: int | None = None) -> int | None:
    """How many tasks wait in ``queue``, or None if the broker cannot tell us."""
    try:
        connection = connect(queue.connection_url, port=amqp_port, connection_attempts=1)
    except WireError as e:
        log.warning("cannot ask the broker about %s: %s", queue.queue, e)
        return None
    try:
        declared = connection.channel().queue_declare(queue.queue, passive=True)
        return declared.method.message_count
    except pika.exceptions.AMQPError as e:
        log.warning("cannot ask the broker about %s: %s", queue.queue, redact(str(e)))
        return None
    finally:
        if connection.is_open:
            connection.close()
