"""What a running manager knows about its site: config files in, decision context out.

The manager runs unprivileged and reads the admin's files through its monitor
(:class:`mep.monitor_link.MonitorLink`): the manager config once; the identity
mapping whenever it changes; the template, schema and ``user_environment.yaml``
at every start, so admins edit them without a restart, as upstream. Here they
are turned into the functions the pure decision core takes, and a plan into
the spawn request the monitor carries out.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from identity.mapping import MappingConfigError
from identity.policy import AccountPolicy, LocalAccount, check_account, own_account
from identity.reload import MappingSource, Signature
from mep.command import Rejection, StartCommand
from mep.decision import DecisionContext, LaunchPlan, Running
from mep.launch import (
    CredentialChannel,
    child_environment,
    interpreter_bindir,
    parse_user_environment,
    stdin_payload,
)
from mep.monitor.requests import AUDIT_FD, CREDENTIALS_FD, NOTE_FD
from mep.monitor_link import MonitorLink, MonitorRefused
from mep.registration import ENDPOINT_FILE, Registration, parse_endpoint_file
from templates.errors import ConfigError
from templates.files import parse_schema
from templates.manager_config import ManagerConfig, RestartPolicy
from templates.render_request import RenderRequest

log = logging.getLogger(__name__)
EX_CONFIG = 78
NIL_ID = "00000000-0000-0000-0000-000000000000"


class RuntimeConfigError(Exception):
    """The manager cannot run with this configuration; ``exit_code`` for the CLI."""

    def __init__(self, message: str, exit_code: int = EX_CONFIG) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass(frozen=True)
class SpawnOrder:
    """What the monitor is asked to start: :meth:`MonitorLink.spawn`'s fields, and the payload."""

    name: str
    user: str
    endpoint_id: str
    identity: str | None
    env: dict[str, str]
    payload: bytes


def known_endpoint_id(link: MonitorLink) -> uuid.UUID | None:
    """The id ``endpoint.json`` remembers from an earlier registration, if any."""
    text = link.read_text("endpoint_id")
    return parse_endpoint_file(text, ENDPOINT_FILE) if text else None


@dataclasses.dataclass
class Runtime:
    """The manager's view of its endpoint and configuration."""

    name: str
    endpoint_dir: Path
    config: ManagerConfig
    files: MonitorLink
    mapping: MappingSource | None = None
    owner: LocalAccount | None = None
    owner_identities: frozenset[str] = frozenset()

    @classmethod
    def load(
        cls,
        name: str,
        endpoint_dir: Path,
        config: ManagerConfig,
        files: MonitorLink,
        multi_user: bool,
    ) -> Runtime:
        """Decide the manager's mode: multi-user with a mapping (a root monitor), or its owner's."""
        if not multi_user:
            if config.identity_mapping_config_path is not None:
                log.warning(
                    "identity_mapping_config_path is ignored: the endpoint is not run by root"
                )
            return cls(name, endpoint_dir, config, files, owner=own_account())
        if config.identity_mapping_config_path is None:
            raise RuntimeConfigError(
                "a manager running as root needs identity_mapping_config_path in config.yaml;"
                " compute-agent never runs users' tasks as root"
            )
        runtime = cls(name, endpoint_dir, config, files)
        known = known_endpoint_id(files)
        runtime.mapping = runtime._load_mapping(str(known) if known else NIL_ID)
        return runtime

    def _read_mapping(self) -> tuple[Signature, str]:
        try:
            found = self.files.read("identity_mapping")
        except MonitorRefused as e:
            raise MappingConfigError(f"cannot read the identity mapping: {e}") from None
        if found is None:
            raise MappingConfigError(
                f"the identity mapping {self.config.identity_mapping_config_path} does not exist"
            )
        return found.signature, found.text

    def _load_mapping(self, endpoint_id: str) -> MappingSource:
        try:
            source = MappingSource(
                self._read_mapping,
                str(self.config.identity_mapping_config_path),
                storage_gateway=endpoint_id,
            )
        except MappingConfigError as e:
            raise RuntimeConfigError(
                f"unable to read identity mapping configuration: {e}"
            ) from None
        _check_run_as(source)
        return source

    def restart_policy(self) -> RestartPolicy:
        return self.config.restart

    @property
    def multi_user(self) -> bool:
        return self.mapping is not None

    def bind_endpoint(self, endpoint_id: str) -> None:
        """After registration, give external mapping programs the real id."""
        if self.mapping is not None:
            self.mapping = self.mapping.with_options(storage_gateway=endpoint_id)

    def reload(self) -> None:
        if self.mapping is not None:
            changed = self.mapping.reload()
            log.info(
                "SIGHUP: identity mapping %s", "reloaded" if changed else "unchanged or invalid"
            )

    # ---- decisions -----------------------------------------------------
    def policy(self) -> AccountPolicy:
        allowed = self.config.allow_system_accounts
        return AccountPolicy(
            min_uid=self.config.min_uid,
            allow_system_accounts=tuple(allowed) if isinstance(allowed, list | tuple) else (),
            allowed_groups=tuple(self.config.allowed_groups),
            denied_users=tuple(self.config.denied_users),
        )

    def decision_context(
        self, running: Mapping[str, Running], registration: Registration
    ) -> DecisionContext:
        policy = self.policy()
        return DecisionContext(
            check_account=lambda name: check_account(name, policy, os.getuid()),
            prepare=self.prepare,
            manager_pid=os.getpid(),
            running=running,
            limits=self.config.limits,
            map_identity=self.mapping.current().map if self.mapping else None,
            owner=self.owner,
            owner_identities=self.owner_identities,
            broker=registration.broker(self.config.amqp_port),
            amqp_port=self.config.amqp_port,
            command_sender=registration.command_sender,
        )

    def prepare(
        self, cmd: StartCommand, account: LocalAccount, mapped: dict
    ) -> RenderRequest | Rejection:
        """Read the admin's template and schema for one start; the user endpoint renders them.

        Only what the admin must fix is refused here (a missing template, a broken
        schema file); everything about the submitter's options is the user
        endpoint's to judge, as its user. Include files are read by the user
        endpoint too, as its user, from the template's directory (as upstream).
        """
        path = self.config.user_config_template_path
        try:
            template = self.files.read_text("template")
            if template is None:
                raise ConfigError("the user config template does not exist", source=str(path))
            schema_text = self.files.read_text("schema")
            schema_path = str(self.config.user_config_schema_path)
            schema = parse_schema(schema_text, schema_path) if schema_text else None
        except (ConfigError, MonitorRefused) as e:
            log.error("%s", e)
            return Rejection(
                "template",
                "this endpoint's user endpoint template or schema is unusable;"
                " contact the endpoint administrator",
                f"{e} (local user {account.name})",
                cmd.endpoint_id,
            )
        return RenderRequest(
            template=template,
            schema=schema,
            options=cmd.user_opts,
            user_runtime=cmd.user_runtime,
            mapped_identity=mapped,
            parent_config=self.config.template_view(),
            include_dir=str(path.parent) if path else None,
        )

    # ---- acting --------------------------------------------------------
    def spawn_order(self, plan: LaunchPlan, credentials: CredentialChannel) -> SpawnOrder:
        """What to ask the monitor for; descriptors land at the numbers the payload names."""
        source = str(self.config.user_environment_path)
        try:
            text = self.files.read_text("environment")
        except MonitorRefused as e:
            log.warning("ignoring %s: %s", source, e)
            text = None
        user_env, warning = parse_user_environment(text, source)
        if warning:
            log.warning("%s", warning)
        payload = stdin_payload(
            plan,
            allowed_functions=self.config.allowed_functions,
            mem_fd=CREDENTIALS_FD,
            enckey=credentials.key,
            audit_fd=AUDIT_FD if self.config.audit_log_path else None,
            note_fd=NOTE_FD,
        )
        return SpawnOrder(
            name=plan.command.name,
            user=plan.account.name,
            endpoint_id=str(plan.command.endpoint_id),
            identity=plan.ep_info.get("globus_matched_identity"),
            env=child_environment(plan, user_env, interpreter_bindir()),
            payload=payload,
        )


def _check_run_as(source: MappingSource) -> None:
    """``run_as`` needs root; the manager is not, so a mapping that asks for it cannot work."""
    me = own_account().name
    for document in source.current().documents:
        run_as = getattr(document, "run_as", None)
        if run_as and run_as != me:
            raise RuntimeConfigError(
                f"identity mapping document {document.index}: run_as {run_as!r} needs root, but"
                f" the manager runs as {me!r} (external programs run as that account);"
                " remove run_as"
            )
