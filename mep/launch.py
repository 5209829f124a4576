"""From a launch plan to exactly what the child process gets.

The environment, argv and stdin payload of a user endpoint are decided here,
purely, from the plan and the admin's ``user_environment.yaml``. The one
resource with a lifetime, the credential memfd that lets a running user
endpoint pick up fresh broker credentials, is :class:`CredentialChannel`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import typing as t
from pathlib import Path

import yaml

from mep.decision import LaunchPlan
from mep.monitor.requests import DEFAULT_PATH
from wire.forked_call import call_in_child
from wire.queue_info import AmqpCreds

log = logging.getLogger(__name__)


def parse_user_environment(text: str | None, source: str) -> tuple[dict[str, str], str | None]:
    """``user_environment.yaml`` as variables, plus a warning for the admin if it is unusable.

    A broken file must not stop users' endpoints: it yields no variables and a
    warning naming the file and the problem.
    """
    if text is None or not text.strip():
        return {}, None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return {}, f"ignoring {source}: not valid YAML ({type(e).__name__}: {e})"
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return (
            {},
            f"ignoring {source}: expected a mapping of NAME: value, got {type(data).__name__}",
        )
    bad = [k for k in data if not isinstance(k, str) or not k or "=" in k or "\0" in k]
    if bad:
        return {}, f"ignoring {source}: invalid variable name(s) {bad!r}"
    return {k: "" if v is None else str(v) for k, v in data.items()}, None


def child_environment(plan: LaunchPlan, user_env: dict[str, str], bindir: str) -> dict[str, str]:
    """The complete environment of the user endpoint; nothing is inherited from root.

    The admin's variables come first; HOME, USER and PATH are defaults they may
    override (as upstream), PATH ending with our interpreter's directory so the
    user endpoint executable is found unless the admin points PATH elsewhere.
    """
    env = dict(user_env)
    env.setdefault("HOME", plan.account.home)
    env.setdefault("USER", plan.account.name)
    env.setdefault("LOGNAME", plan.account.name)
    env.setdefault("PATH", f"{DEFAULT_PATH}:{bindir}")
    env.setdefault("LANG", "C.UTF-8")
    env["GLOBUS_COMPUTE_ENDPOINT_NAME"] = plan.command.name
    runtime = plan.command.user_runtime
    python = runtime.get("python") if isinstance(runtime.get("python"), dict) else {}
    python_version = python.get("version") or runtime.get("python_version")
    if python_version:
        env.setdefault("GC_USER_PYTHON_VERSION", str(python_version))
    if runtime.get("globus_compute_sdk_version"):
        env.setdefault("GC_USER_SDK_VERSION", str(runtime["globus_compute_sdk_version"]))
    return env


def stdin_payload(
    plan: LaunchPlan,
    *,
    allowed_functions: t.Sequence[str] | None,
    mem_fd: int | None = None,
    enckey: str | None = None,
    audit_fd: int | None = None,
    note_fd: int | None = None,
) -> bytes:
    """The one JSON document the user endpoint reads on stdin.

    The 4.19 contract, but with ``render`` (what to render, as the user) in place
    of ``config`` (a config the manager rendered), and ``note_fd``, where the user
    endpoint says why it refused to start.
    """
    payload: dict[str, t.Any] = {
        "amqp_creds": plan.command.amqp_creds.to_dict(),
        "render": plan.render.to_document(),
        "ep_info": plan.ep_info,
    }
    if allowed_functions is not None:
        payload["allowed_functions"] = [str(f) for f in allowed_functions]
    if mem_fd is not None:
        payload["mem_fd"] = mem_fd
        payload["enckey"] = enckey
    if audit_fd is not None:
        payload["audit_fd"] = audit_fd
    if note_fd is not None:
        payload["note_fd"] = note_fd
    return json.dumps(payload).encode()


def interpreter_bindir() -> str:
    """The directory holding our interpreter and console scripts."""
    return str(Path(sys.executable).parent)


class CredentialChannel:
    """A memfd holding the user endpoint's current broker credentials, encrypted.

    The child gets a read-only descriptor and the key (on stdin); a repeated
    start command for a running endpoint rewrites the content, which the user
    endpoint re-reads on every reconnect. The content is a Fernet token, as
    4.19 writes it; the sealing runs in a forked child (:mod:`wire.forked_call`)
    so the manager never loads cryptography.

    The service sends a start command with every submit, and they nearly
    always carry the credentials already written: those are not sealed again.
    Sealing forks a child that imports cryptography, about 15 ms of the
    manager's time per submit during a burst of submits.
    """

    def __init__(self, name: str, creds: AmqpCreds) -> None:
        self.key = base64.urlsafe_b64encode(os.urandom(32)).decode()  # a Fernet key
        self._fd = os.memfd_create(f"compute-agent-creds-{name}", os.MFD_CLOEXEC)
        self._sealed: AmqpCreds | None = None
        self.child_fd = -1
        try:
            self.write(creds)
            self.child_fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise

    def write(self, creds: AmqpCreds) -> None:
        if creds == self._sealed:
            return
        document = json.dumps({"amqp_creds": creds.to_dict()})
        token = call_in_child(lambda: fernet_token(self.key, document)).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, token, 0)
        self._sealed = creds

    def close_child_end(self) -> None:
        """Once the child has its copy, the manager keeps only the writable end."""
        if self.child_fd >= 0:
            os.close(self.child_fd)
            self.child_fd = -1

    def close(self) -> None:
        self.close_child_end()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def fernet_token(key: str, plaintext: str) -> str:
    """``plaintext`` sealed with ``key`` as a Fernet token (what ``enckey`` opens)."""
    from cryptography.fernet import Fernet

    return Fernet(key.encode()).encrypt(plaintext.encode()).decode()


NOTE_MAX = 4096


def open_note_pipe() -> tuple[int, int]:
    """(read end kept by the manager, write end for the user endpoint's ``note_fd``)."""
    return os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)


def read_note(fd: int) -> str | None:
    """What a user endpoint left on its note pipe, made safe to log; None if nothing.

    The user endpoint runs as its user, who may write anything there: only the
    ``step`` and ``admin`` fields are used, control characters become spaces.
    """
    try:
        raw = os.read(fd, NOTE_MAX)
    except BlockingIOError:
        return None
    try:
        note = json.loads(raw)
        text = f"[{note['step']}] {note['admin']}"
    except (ValueError, TypeError, KeyError):
        text = raw.decode("utf-8", "replace") if raw else ""
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text[:NOTE_MAX] or None
