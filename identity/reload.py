"""Hot reload of the identity-mapping file: admins fix a mapping without a restart.

:class:`MappingSource` asks its reader for the file whenever the manager asks
for the current mapper (cheap next to handling a start command), so there is
no polling thread to start, stop or leak. The reader returns the text with a
*signature* (inode, ctime, mtime, size): unchanged, nothing is parsed. A valid
change is swapped in whole; an invalid one keeps the previous mapper, is logged
with the load error, and is not retried until the file changes again.
``reload()`` forces a re-read (SIGHUP).

The reader is a function so the file can live where the manager cannot look:
the root monitor opens it read-only and passes the descriptor
(:meth:`mep.monitor_link.MonitorLink.read`); :func:`file_reader` reads a path
directly, for tools and tests.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from identity.external import run_program
from identity.mapping import Mapper, MappingConfigError, load_mapping_text

log = logging.getLogger(__name__)

Signature = tuple[int, int, int, int]
# (signature, text) of the mapping file now; raises MappingConfigError if unreadable.
Reader = Callable[[], tuple[Signature, str]]


def file_reader(path: str | Path) -> Reader:
    def read() -> tuple[Signature, str]:
        try:
            with open(path, "rb") as f:
                status = os.fstat(f.fileno())
                text = f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise MappingConfigError(f"cannot read {path}: {error}") from error
        return (status.st_ino, status.st_ctime_ns, status.st_mtime_ns, status.st_size), text

    return read


class MappingSource:
    """The current mapper for a mapping file, swapped atomically on valid changes."""

    def __init__(self, read: Reader, name: str, **load_options) -> None:
        """Load the file now; an invalid file at start-up raises MappingConfigError."""
        self.name = name
        self._read = read
        self._options = load_options
        self._lock = threading.Lock()
        self._signature, text = read()
        self._mapper = load_mapping_text(text, name, runner=run_program, **load_options)
        self.last_error: str | None = None
        self._log_warnings(self._mapper)

    @classmethod
    def from_path(cls, path: str | Path, **load_options) -> MappingSource:
        return cls(file_reader(path), str(path), **load_options)

    def with_options(self, **load_options) -> MappingSource:
        """The same file loaded anew with other options (the endpoint id, once registered)."""
        return MappingSource(self._read, self.name, **load_options)

    def current(self) -> Mapper:
        """The mapper to use now, reloading first if the file changed since last time."""
        with self._lock:
            try:
                signature, text = self._read()
            except MappingConfigError as error:
                if str(error) != self.last_error:  # once per problem, not per command
                    log.error("identity mapping: %s; keeping the previous mapping", error)
                self.last_error = str(error)
                return self._mapper
            if signature != self._signature:
                log.info("identity mapping %s changed; rereading", self.name)
                self._reread(signature, text)
            return self._mapper

    def reload(self) -> bool:
        """Re-read the file even if it looks unchanged; True if the new mapper is in use."""
        with self._lock:
            log.info("identity mapping %s: reload requested", self.name)
            try:
                signature, text = self._read()
            except MappingConfigError as error:
                self.last_error = str(error)
                log.error("identity mapping: %s; keeping the previous mapping", error)
                return False
            return self._reread(signature, text)

    def _reread(self, signature: Signature, text: str) -> bool:
        self._signature = signature
        try:
            mapper = load_mapping_text(text, self.name, runner=run_program, **self._options)
        except MappingConfigError as error:
            self.last_error = str(error)
            log.error(
                "unable to update identity mapping from %s; keeping the previous mapping: %s",
                self.name,
                error,
            )
            return False
        self._mapper, self.last_error = mapper, None
        self._log_warnings(mapper)
        log.info("identity mapping %s reloaded (%d documents)", self.name, len(mapper.documents))
        return True

    def _log_warnings(self, mapper: Mapper) -> None:
        for warning in mapper.warnings:
            log.warning("identity mapping %s: %s", self.name, warning)
