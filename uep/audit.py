"""High-assurance audit records, written to the manager's packet pipe (``audit_fd``).

One ``os.write`` per record, so the manager's ``O_DIRECT`` pipe keeps records
whole; the manager adds the time, uid, pid and endpoint id. Writing is
fail-closed: an endpoint that can no longer be audited stops.
"""

from __future__ import annotations

import logging
import os
import typing as t

log = logging.getLogger(__name__)

RECORD_MAX = 4096


def audit_record(function_id: str | None, task_id: str, state: str, message: str = "") -> bytes:
    """``fid=… tid=… bid= STATE[ - message]`` on one line, at most one page."""
    text = f"fid={function_id or ''} tid={task_id} bid= {state}"
    if message:
        text += f" - {message}"
    text = text.replace("\n", " ").replace("\r", "").replace("\0", "")
    return text.encode()[:RECORD_MAX]


class Audit:
    """Writes records if the manager gave us a pipe; does nothing otherwise."""

    def __init__(self, fd: int | None, on_failure: t.Callable[[str], None]) -> None:
        self.fd = fd
        self.on_failure = on_failure

    def __call__(
        self, function_id: str | None, task_id: str, state: str, message: str = ""
    ) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, audit_record(function_id, task_id, state, message))
        except OSError as e:
            log.error("cannot write the audit log (fd %d): %s; stopping", self.fd, e)
            self.fd = None
            self.on_failure("audit log unwritable")
