"""Hot reload of the identity-mapping file: admins fix a mapping without a restart.

:class:`MappingSource` re-stats the file whenever the manager asks for the
current mapper (a ``stat`` is cheap next to handling a start command), so
there is no polling thread to start, stop or leak. A valid change is swapped
in whole; an invalid one keeps the previous mapper, is logged with the load
error, and is not retried until the file changes again. ``reload()`` forces a
re-read (SIGHUP).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from identity.external import run_program
from identity.mapping import Mapper, MappingConfigError, load_mapping_file

log = logging.getLogger(__name__)


def file_signature(path: Path) -> tuple | None:
    """What changes when the file is edited or replaced; None if it cannot be stat'ed."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_ctime_ns, status.st_mtime_ns, status.st_size)


class MappingSource:
    """The current mapper for a mapping file, swapped atomically on valid changes."""

    def __init__(self, path: str | Path, **load_options):
        """Load the file now; an invalid file at start-up raises MappingConfigError."""
        self.path = Path(path)
        self._options = load_options
        self._lock = threading.Lock()
        self._signature = file_signature(self.path)
        self._mapper = load_mapping_file(self.path, runner=run_program, **load_options)
        self.last_error: str | None = None
        self._log_warnings(self._mapper)

    def current(self) -> Mapper:
        """The mapper to use now, reloading first if the file changed since last time."""
        with self._lock:
            if file_signature(self.path) != self._signature:
                log.info("identity mapping %s changed; rereading", self.path)
                self._reread()
            return self._mapper

    def reload(self) -> bool:
        """Re-read the file even if it looks unchanged; True if the new mapper is in use."""
        with self._lock:
            log.info("identity mapping %s: reload requested", self.path)
            return self._reread()

    def _reread(self) -> bool:
        self._signature = file_signature(self.path)
        try:
            mapper = load_mapping_file(self.path, runner=run_program, **self._options)
        except MappingConfigError as error:
            self.last_error = str(error)
            log.error(
                "unable to update identity mapping from %s; keeping the previous mapping: %s",
                self.path,
                error,
            )
            return False
        self._mapper, self.last_error = mapper, None
        self._log_warnings(mapper)
        log.info("identity mapping %s reloaded (%d documents)", self.path, len(mapper.documents))
        return True

    def _log_warnings(self, mapper: Mapper) -> None:
        for warning in mapper.warnings:
            log.warning("identity mapping %s: %s", self.path, warning)
