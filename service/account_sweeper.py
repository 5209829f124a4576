"""Removing broker accounts the database no longer wants.

Most accounts are retired where their reason ends (an endpoint deleted, a
manager re-registered); this thread catches the rest: a client removed with
``compute-service client remove`` while the service ran, or a removal that
failed because the management API was down. An account is removed only when
two sweeps in a row found it stale, so one being made by a request that has
not yet committed is never taken for stale.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from service.broker_admin import BrokerAdminError
from service.broker_provisioning import Provisioner

log = logging.getLogger(__name__)
SWEEP_INTERVAL_S = 300.0


class AccountSweeper:
    """Sweeps at start and then every ``interval_s`` on its own daemon thread."""

    def __init__(
        self,
        provisioner: Provisioner,
        sessions: sessionmaker[Session],
        interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.provisioner = provisioner
        self.sessions = sessions
        self.interval_s = interval_s
        self._suspects: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="account-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def sweep(self) -> list[str]:
        """One pass; returns the accounts removed."""
        admin = self.provisioner.admin
        with self.sessions() as s:
            stale = set(self.provisioner.stale_accounts(s, admin.accounts()))
        doomed = sorted(stale & self._suspects)
        self._suspects = stale - set(doomed)
        for name in doomed:
            admin.remove(name)
        if doomed:
            log.info("removed %d broker account(s) no longer in use: %s", len(doomed), doomed)
        return doomed

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except BrokerAdminError as e:
                log.warning("broker account sweep skipped: %s", e)
            except Exception:
                log.exception("broker account sweep failed")
            self._stop.wait(self.interval_s)
