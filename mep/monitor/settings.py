"""What the monitor needs to know, as JSON the ``start`` command wrote from ``config.yaml``.

The monitor parses no YAML: ``compute-endpoint start`` reads the admin's
``config.yaml`` (as root, before the monitor exists), and hands the monitor
this document on its standard input. It holds only what root acts on: the
account policy it re-checks for every spawn, the per-user limits of the
cgroups it makes, PAM, the audit log, the account the manager runs as, and the
paths of the admin's files the manager may ask it to open.
"""

from __future__ import annotations

import dataclasses
import json
import typing as t

from identity.policy import AccountPolicy
from mep.monitor.requests import FILES


class SettingsError(ValueError):
    """The document is not the monitor's settings; the message names the field."""


@dataclasses.dataclass(frozen=True)
class MonitorSettings:
    name: str
    endpoint_dir: str
    manager_account: str | None  # None: unprivileged, the manager runs as the monitor's account
    policy: AccountPolicy = dataclasses.field(default_factory=AccountPolicy)
    memory_per_user: int | None = None
    processes_per_user: int | None = None
    pam_enable: bool = False
    pam_service: str = "globus-compute-endpoint"
    audit_log_path: str | None = None
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # FILES name -> path
    console: bool = True  # foreground: the manager also logs to standard error
    detached: bool = False  # stdout is the starting command's pipe: say the outcome there
    debug: bool = False
    stop_grace_s: float = 25.0
    # A Python file the manager runs instead of mep.manager_process (a wrapper
    # for tracing or profiling; the protocol tests' stand-in manager).
    manager_program: str | None = None

    def to_json(self) -> str:
        document = dataclasses.asdict(self)
        return json.dumps(document)

    @classmethod
    def from_json(cls, text: str | bytes) -> MonitorSettings:
        try:
            document = json.loads(text)
        except ValueError as e:
            raise SettingsError(f"not JSON: {e}") from None
        if not isinstance(document, dict):
            raise SettingsError("expected an object")
        unknown = set(document) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SettingsError(f"unknown fields {sorted(unknown)}")
        policy = document.pop("policy", {})
        files = document.get("files", {})
        if not isinstance(files, dict) or not all(
            k in FILES and isinstance(v, str) and v.startswith("/") for k, v in files.items()
        ):
            raise SettingsError("files: expected absolute paths for the readable files")
        program = document.get("manager_program")
        if program is not None and not (isinstance(program, str) and program.startswith("/")):
            raise SettingsError("manager_program: expected an absolute path")
        try:
            settings = cls(policy=_policy(policy), **document)
        except TypeError as e:
            raise SettingsError(str(e)) from None
        _check_types(settings)
        return settings


def _policy(document: t.Any) -> AccountPolicy:
    if not isinstance(document, dict):
        raise SettingsError("policy: expected an object")
    try:
        policy = AccountPolicy(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in document.items()}
        )
    except TypeError as e:
        raise SettingsError(f"policy: {e}") from None
    if not isinstance(policy.min_uid, int) or not all(
        isinstance(name, str)
        for names in (policy.allow_system_accounts, policy.allowed_groups, policy.denied_users)
        for name in names
    ):
        raise SettingsError("policy: min_uid must be a number and the lists names")
    return policy


def _check_types(settings: MonitorSettings) -> None:
    expected = t.get_type_hints(MonitorSettings)
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name in ("policy", "files"):
            continue
        allowed = t.get_args(expected[field.name]) or (expected[field.name],)
        allowed = tuple(type(None) if a is None else a for a in allowed)
        allowed += (int,) if float in allowed else ()
        if isinstance(value, bool) and bool not in allowed:
            raise SettingsError(f"{field.name}: expected {expected[field.name]}")
        if not isinstance(value, allowed):
            raise SettingsError(f"{field.name}: expected {expected[field.name]}")
