"""Telling a submitter why their user endpoint did not start.

The manager cannot answer the SDK directly; it publishes a status report with
``error`` on the user endpoint's heartbeat queue, and the service fails that
endpoint's pending tasks with the text. A notice that cannot be delivered is
logged, never raised: the manager keeps serving everyone else.
"""

from __future__ import annotations

import logging
import uuid

from wire.amqp import connect, publish_kwargs, redact
from wire.errors import WireError
from wire.messages import EPStatusReport, pack
from wire.queue_info import WriteQueueInfo

log = logging.getLogger(__name__)
NOTICE_HEARTBEAT_PERIOD = 3


def notice_body(endpoint_id: uuid.UUID, message: str) -> bytes:
    report = EPStatusReport(
        endpoint_id=endpoint_id,
        global_state={"error": message, "heartbeat_period": NOTICE_HEARTBEAT_PERIOD},
        task_statuses={},
    )
    return pack(report)


def send_failure_notice(
    queue: WriteQueueInfo, endpoint_id: uuid.UUID, message: str, amqp_port: int | None = None
) -> bool:
    """Publish the error report; True once the broker confirmed it."""
    try:
        connection = connect(queue.connection_url, port=amqp_port, connection_attempts=1)
    except WireError as e:
        log.error("could not send failure notice for %s: %s", endpoint_id, e)
        return False
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        kwargs = publish_kwargs(queue)
        kwargs.setdefault("mandatory", True)
        channel.basic_publish(body=notice_body(endpoint_id, message), **kwargs)
        return True
    except Exception as e:
        log.error("could not send failure notice for %s: %s", endpoint_id, redact(str(e)))
        return False
    finally:
        if connection.is_open:
            connection.close()
