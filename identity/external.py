"""Run an admin's external identity-mapping program under the GCS contract, safely.

The contract is Globus Connect Server's: the program gets its configured argv
plus ``-c <connector> -s <storage gateway> -a``, reads
``{"DATA_TYPE": "identity_mapping_input#1.0.0", "identities": [...]}`` on stdin
and writes ``{"DATA_TYPE": "identity_mapping_output#1.0.0", "result":
[{"id": ..., "output": ...}]}`` on stdout (empty stdout: no mapping).

What the official runner gets wrong, and this one does not:

- a program that overruns ``timeout_s`` is killed, with its whole process
  group, instead of being left behind as an orphan;
- it starts with a minimal environment (PATH, LANG, HOME, USER), never the
  manager's, which holds the endpoint's client secret;
- it can run as an unprivileged account (``run_as``).

Every failure (cannot start, timeout, non-zero exit, garbage output) becomes
a :class:`ProgramAnswer` with an ``error`` and an admin log line; nothing
raises to the caller, so one broken program cannot stop the manager.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import signal
import subprocess
from shlex import join

from identity.documents import ExternalDocument, ProgramAnswer

INPUT_TYPE = "identity_mapping_input#1.0.0"
OUTPUT_TYPE = "identity_mapping_output#1.0.0"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_OUTPUT_BYTES = 1 << 20
REAP_TIMEOUT_S = 2.0

log = logging.getLogger(__name__)


class ProgramOutputError(ValueError):
    """Standard output that does not follow the GCS output contract."""


def parse_output(stdout: str) -> tuple[tuple[str, str], ...]:
    """The (identity id, local name) pairs a program answered, in its order."""
    if not stdout.strip():
        return ()
    try:
        document = json.loads(stdout)
    except json.JSONDecodeError as error:
        raise ProgramOutputError(f"stdout is not JSON ({error})") from None
    if not isinstance(document, dict):
        raise ProgramOutputError("stdout is not a JSON object")
    if document.get("DATA_TYPE", OUTPUT_TYPE) != OUTPUT_TYPE:
        raise ProgramOutputError(f"DATA_TYPE is {document['DATA_TYPE']!r}, not {OUTPUT_TYPE!r}")
    results = document.get("result")
    if not isinstance(results, list):
        raise ProgramOutputError("'result' is missing or not a list")
    pairs = []
    for number, entry in enumerate(results):
        if not isinstance(entry, dict):
            raise ProgramOutputError(f"result[{number}] is not an object")
        identity_id, output = entry.get("id"), entry.get("output")
        if not isinstance(identity_id, str) or not isinstance(output, str) or not output:
            raise ProgramOutputError(
                f"result[{number}] needs a string 'id' and a non-empty 'output'"
            )
        pairs.append((identity_id, output))
    return tuple(pairs)


def run_program(
    document: ExternalDocument, identities: list, connector: str, storage_gateway: str
) -> ProgramAnswer:
    """Run one external mapping document; never raises."""
    argv = [*document.command, "-c", connector, "-s", storage_gateway, "-a"]
    stdin = json.dumps({"DATA_TYPE": INPUT_TYPE, "identities": identities}, default=str).encode()
    try:
        process = _start(argv, document.run_as)
    except (OSError, KeyError, ValueError, subprocess.SubprocessError) as error:
        return _failed(argv, f"could not start: ({type(error).__name__}) {error}")
    try:
        stdout, stderr = process.communicate(stdin, timeout=document.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return _failed(argv, f"no answer within {document.timeout_s:g} s; killed")
    text, errors = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    log.debug("identity mapping program %s\n stdin: %s\n stdout: %s", join(argv), stdin, text)
    if process.returncode != 0:
        return _failed(argv, f"exited with status {process.returncode}", errors)
    if len(stdout) > MAX_OUTPUT_BYTES:
        return _failed(argv, f"wrote more than {MAX_OUTPUT_BYTES} bytes", errors)
    try:
        return ProgramAnswer(parse_output(text))
    except ProgramOutputError as error:
        return _failed(argv, f"invalid output: {error}; stdout began {text[:200]!r}", errors)


def _start(argv: list[str], run_as: str | None) -> subprocess.Popen:
    """Start the program in its own session, with a minimal environment.

    ``run_as`` uses subprocess's ``user=``/``group=``/``extra_groups=[]``: the
    one privilege change outside mep/'s privileged edge. It is confined to a
    short-lived helper that runs no user code (only the admin's own program)
    and the standard library performs the switch between fork and exec, so no
    uid-changing code of ours runs here.
    """
    account = pwd.getpwnam(run_as) if run_as else pwd.getpwuid(os.getuid())
    switch = {}
    if account.pw_uid != os.geteuid():
        switch = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    environment = {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "HOME": account.pw_dir or "/",
        "USER": account.pw_name,
        "LOGNAME": account.pw_name,
    }
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        cwd="/",
        start_new_session=True,
        **switch,
    )


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the program's whole session group and reap it, bounded in time."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    try:
        process.communicate(timeout=REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        try:
            process.wait(timeout=REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("identity mapping program pid %d survived SIGKILL", process.pid)


def _failed(argv: list[str], reason: str, stderr: str = "") -> ProgramAnswer:
    detail = f"; stderr: {stderr.strip()[:500]!r}" if stderr.strip() else ""
    log.warning("identity mapping program %s failed: %s%s", join(argv), reason, detail)
    return ProgramAnswer(error=reason)
