"""What a running manager knows about its site: config files in, decision context out.

This is where files are read (the manager config once; the template, schema and
``user_environment.yaml`` at every start, so admins edit them without a
restart, as upstream) and turned into the functions the pure decision core and
the privileged edge take.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import typing as t
from collections.abc import Mapping
from pathlib import Path

from identity.policy import AccountPolicy, LocalAccount, check_account, own_account
from identity.reload import MappingSource
from mep.command import Rejection, StartCommand
from mep.decision import DecisionContext, LaunchPlan, Running
from mep.launch import (
    CredentialChannel,
    child_environment,
    find_executable,
    interpreter_bindir,
    parse_user_environment,
    stdin_payload,
)
from mep.privilege import SpawnError, SpawnRequest
from mep.registration import Registration, read_endpoint_id
from templates import files
from templates.endpoint_dir import user_endpoint_paths
from templates.errors import ConfigError
from templates.render_request import RenderRequest

log = logging.getLogger(__name__)
EX_CONFIG = 78


class RuntimeConfigError(Exception):
    """The manager cannot run with this configuration; ``exit_code`` for the CLI."""

    def __init__(self, message: str, exit_code: int = EX_CONFIG) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_optional(path: Path | None) -> str | None:
    """A file's text, or None when no path is configured or the file is absent."""
    if path is None:
        return None
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _known_endpoint_id(endpoint_dir: Path) -> str:
    """Our endpoint id for external mapping programs (``-s``); nil before registration."""
    return str(read_endpoint_id(endpoint_dir) or "00000000-0000-0000-0000-000000000000")


@dataclasses.dataclass
class Runtime:
    """The manager's view of its endpoint directory and configuration."""

    name: str
    endpoint_dir: Path
    config: t.Any
    mapping: MappingSource | None = None
    owner: LocalAccount | None = None
    owner_identities: frozenset[str] = frozenset()

    @classmethod
    def load(cls, name: str, endpoint_dir: Path, config: t.Any) -> Runtime:
        """Decide the manager's mode: privileged with a mapping, or its owner's only."""
        privileged = os.geteuid() == 0
        path = config.identity_mapping_config_path
        if privileged and path is None:
            raise RuntimeConfigError(
                "a manager running as root needs identity_mapping_config_path in config.yaml;"
                " compute-agent never runs users' tasks as root"
            )
        if privileged and not config.email:
            raise RuntimeConfigError(
                "multi-user endpoints require a contact email (email: in config.yaml)"
            )
        if not privileged:
            if path is not None:
                log.warning("identity_mapping_config_path is ignored: the manager is not root")
            return cls(name, endpoint_dir, config, owner=own_account())
        try:
            mapping = MappingSource(path, storage_gateway=str(_known_endpoint_id(endpoint_dir)))
        except PermissionError as e:
            raise RuntimeConfigError(f"cannot read the identity mapping: {e}", 77) from None
        except Exception as e:
            raise RuntimeConfigError(
                f"unable to read identity mapping configuration: {e}"
            ) from None
        return cls(name, endpoint_dir, config, mapping=mapping)

    def restart_policy(self) -> t.Any:
        """The config's ``restart`` section, read straight into the child table's policy type."""
        return self.config.restart

    @property
    def multi_user(self) -> bool:
        return self.mapping is not None

    def bind_endpoint(self, endpoint_id: t.Any) -> None:
        """After the first registration, give external mapping programs the real id."""
        if self.mapping is not None:
            self.mapping = MappingSource(self.mapping.path, storage_gateway=str(endpoint_id))

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
        limits = self.config.limits
        policy = self.policy()
        return DecisionContext(
            check_account=lambda name: check_account(name, policy, os.getuid()),
            prepare=self.prepare,
            manager_pid=os.getpid(),
            running=running,
            limits=limits,
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
        """Read the admin's template files for one start; the user endpoint renders them.

        Only what the admin must fix is refused here (a missing template, a broken
        schema file); everything about the submitter's options is the user
        endpoint's to judge, as its user.
        """

        def refuse(user: str, admin: str) -> Rejection:
            return Rejection("template", user, admin, cmd.endpoint_id)

        path = self.config.user_config_template_path
        try:
            template = files.read_text(path, "user config template")
            schema_path = self.config.user_config_schema_path
            schema = files.read_schema(schema_path) if schema_path else None
        except ConfigError as e:
            log.error("%s", e)
            return refuse(
                "this endpoint's user endpoint template or schema is unusable;"
                " contact the endpoint administrator",
                f"{e} (local user {account.name})",
            )
        return RenderRequest(
            template=template,
            schema=schema,
            options=cmd.user_opts,
            user_runtime=cmd.user_runtime,
            mapped_identity=mapped,
            parent_config=self.config.template_view(),
            includes=files.read_template_files(path.parent),
        )

    # ---- acting --------------------------------------------------------
    def spawn_request(
        self,
        plan: LaunchPlan,
        credentials: CredentialChannel,
        audit_fd: int | None,
        cgroup_fds: tuple[int, ...] = (),
        note_fd: int | None = None,
    ) -> SpawnRequest:
        source = str(self.config.user_environment_path)
        user_env, warning = parse_user_environment(
            read_optional(self.config.user_environment_path), source
        )
        if warning:
            log.warning("%s", warning)
        env = child_environment(plan, user_env, interpreter_bindir())
        executable = find_executable(env)
        if executable is None:
            raise SpawnError(
                "find executable",
                f"compute-endpoint not found on PATH {env.get('PATH')!r} for {plan.account.name}"
                " (is the installation readable by that account?)",
                "the user endpoint program is not installed where your account can run it;"
                " contact the endpoint administrator",
            )
        payload = stdin_payload(
            plan,
            allowed_functions=self.config.allowed_functions,
            mem_fd=credentials.child_fd,
            enckey=credentials.key,
            audit_fd=audit_fd,
            note_fd=note_fd,
        )
        account = plan.account
        # Where the log goes until the user endpoint has rendered its config and
        # knows the template's own ``paths:``.
        _, log_file = user_endpoint_paths(account.home, plan.command.name)
        return SpawnRequest(
            account=account,
            argv=(executable, "_start-user-endpoint", plan.command.name),
            env=env,
            stdin_payload=payload,
            log_dir=str(log_file.parent),
            log_name=log_file.name,
            use_pam=self.config.pam.enable,
            pam_service=self.config.pam.service_name,
            extra_fds=tuple(
                fd for fd in (credentials.child_fd, audit_fd, note_fd) if fd is not None
            ),
            cgroup_fds=cgroup_fds,
        )
