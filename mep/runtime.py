"""What a running manager knows about its site: config files in, decision context out.

This is where files are read (the manager config once; the template, schema and
``user_environment.yaml`` at every start, so admins edit them without a
restart, as upstream) and turned into the functions the pure decision core and
the privileged edge take.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pwd
import typing as t
from collections.abc import Mapping
from pathlib import Path

from identity.policy import AccountPolicy, LocalAccount, check_account, group_lookup
from identity.reload import MappingSource
from mep.command import Rejection, StartCommand
from mep.decision import DecisionContext, LaunchPlan, RenderedConfig, Running
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
from templates.endpoint_dir import user_endpoint_paths

log = logging.getLogger(__name__)
EX_CONFIG = 78


class RuntimeConfigError(Exception):
    """The manager cannot run with this configuration; ``exit_code`` for the CLI."""

    def __init__(self, message: str, exit_code: int = EX_CONFIG) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _own_account() -> LocalAccount:
    entry = pwd.getpwuid(os.getuid())
    memberships = group_lookup(entry.pw_name, entry.pw_gid)
    return LocalAccount(
        entry.pw_name,
        entry.pw_uid,
        entry.pw_gid,
        tuple(g for g, _ in memberships),
        entry.pw_dir,
        entry.pw_shell,
        tuple(n for _, n in memberships),
        entry.pw_gecos,
    )


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
            return cls(name, endpoint_dir, config, owner=_own_account())
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
            render=self.render,
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

    def render(
        self, cmd: StartCommand, account: LocalAccount, mapped: dict
    ) -> RenderedConfig | Rejection:
        from templates.rendering import RenderError, render_user_config

        def refuse(check: str, user: str, admin: str) -> Rejection:
            return Rejection(check, user, admin, cmd.endpoint_id)

        template = read_optional(self.config.user_config_template_path)
        if template is None:
            return refuse(
                "render",
                "this endpoint has no user endpoint template; contact the administrator",
                f"template {self.config.user_config_template_path} is missing",
            )
        try:
            schema_text = read_optional(self.config.user_config_schema_path)
            schema = json.loads(schema_text) if schema_text else None
        except ValueError as e:
            return refuse(
                "render",
                "this endpoint's option schema is broken; contact the administrator",
                f"{self.config.user_config_schema_path} is not valid JSON: {e}",
            )
        result = render_user_config(
            template,
            schema,
            cmd.user_opts,
            user_runtime=cmd.user_runtime,
            mapped_identity=mapped,
            parent_config=self.config.template_view(),
        )
        if isinstance(result, RenderError):
            return refuse(
                f"render:{result.step}",
                result.user_message,
                f"{result.admin_message} (local user {account.name})",
            )
        return RenderedConfig(result.yaml_text, result.config)

    # ---- acting --------------------------------------------------------
    def spawn_request(
        self,
        plan: LaunchPlan,
        credentials: CredentialChannel,
        audit_fd: int | None,
        cgroup_fds: tuple[int, ...] = (),
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
        )
        account = plan.account
        paths = plan.rendered.config.paths
        _, log_file = user_endpoint_paths(
            account.home, plan.command.name, paths.endpoint_dir, paths.endpoint_log
        )
        return SpawnRequest(
            account=account,
            argv=(executable, "_start-user-endpoint", plan.command.name),
            env=env,
            stdin_payload=payload,
            log_dir=str(log_file.parent),
            log_name=log_file.name,
            use_pam=self.config.pam.enable,
            pam_service=self.config.pam.service_name,
            extra_fds=tuple(fd for fd in (credentials.child_fd, audit_fd) if fd is not None),
            cgroup_fds=cgroup_fds,
        )
