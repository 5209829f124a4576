"""Telling a submitter why their user endpoint did not start.

The manager cannot answer the SDK directly; it publishes a status report with
``error`` about that user endpoint, on the manager's own heartbeat route and
connection (never to a place a command names), and the service fails that
endpoint's pending tasks with the text: the service accepts a manager's report
about a user endpoint of its own. A notice that cannot be delivered is logged,
never raised: the manager keeps serving everyone else.
"""

from __future__ import annotations

import logging
import uuid

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from wire.amqp import publish_kwargs
from wire.messages import EPStatusReport, pack
from wire.queue_info import WriteQueueInfo
from wire.redaction import redact

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
    channel: BlockingChannel | None, route: WriteQueueInfo, endpoint_id: uuid.UUID, message: str
) -> bool:
    """Publish the error report on ``channel``; True once the broker confirmed it."""
    if channel is None or not channel.is_open:
        log.error("could not send failure notice for %s: not connected to the broker", endpoint_id)
        return False
    try:
        channel.basic_publish(body=notice_body(endpoint_id, message), **publish_kwargs(route))
        return True
    except pika.exceptions.AMQPError as e:
        log.error("could not send failure notice for %s: %s", endpoint_id, redact(str(e)))
        return False
