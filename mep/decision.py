"""The manager's decision core: a start command in, a launch plan or a rejection out.

Pure: everything it needs (the identity mapper, the account policy, the
template reader, what is already running, where our broker is) arrives as
data or as a function in :class:`DecisionContext`, so every path is
unit-testable without AMQP, fork or root. The order of checks after
:func:`mep.command.parse_command` is: the broker the credentials lead to,
identity (mapping, or the owner's identity set for an unprivileged manager),
account policy; then a command for a running user endpoint is a credential
refresh, allowed only for that endpoint's own account and id; otherwise
per-user limits, and reading the admin's template for the user endpoint to render.

The credentials in a command must lead to the broker the manager registered
with (scheme, host, port, vhost): a command can hand a user endpoint its
account, never send it, or root, somewhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from identity.mapping import MappingOutcome
from identity.policy import LocalAccount, Refused, mapped_identity
from mep.command import Properties, Rejection, StartCommand, parse_command
from templates.manager_config import Limits
from templates.render_request import RenderRequest
from wire.queue_info import BrokerAddress, rewrite_port


@dataclasses.dataclass(frozen=True)
class Running:
    """A user endpoint the manager runs: whose it is and which id it serves."""

    account: str
    endpoint_id: str


# Reads the admin's template files for one start: the manager never renders them.
PrepareFn = Callable[[StartCommand, LocalAccount, dict], RenderRequest | Rejection]


@dataclasses.dataclass(frozen=True)
class DecisionContext:
    """What the manager knows when a command arrives.

    Exactly one of ``map_identity`` (a privileged manager with a mapping file)
    and ``owner`` + ``owner_identities`` (a manager that runs user endpoints as
    its own account, accepting only its owner's Globus identities) is set.
    """

    check_account: Callable[[str], LocalAccount | Refused]
    prepare: PrepareFn
    manager_pid: int
    running: Mapping[str, Running] = dataclasses.field(default_factory=dict)
    limits: Limits = dataclasses.field(default_factory=Limits)
    map_identity: Callable[[Sequence[dict]], MappingOutcome] | None = None
    owner: LocalAccount | None = None
    owner_identities: frozenset[str] = frozenset()
    broker: BrokerAddress | None = None
    amqp_port: int | None = None
    command_sender: str | None = None


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start one user endpoint, decided but not yet done."""

    command: StartCommand
    account: LocalAccount
    render: RenderRequest  # rendered by the user endpoint, as its user
    ep_info: dict


@dataclasses.dataclass(frozen=True)
class Refresh:
    """The user endpoint already runs: hand it the command's fresh credentials."""

    command: StartCommand


Decision = LaunchPlan | Refresh | Rejection


def _describe_identities(identity_set: Sequence[dict]) -> str:
    return ", ".join(f"{i.get('username')} ({i.get('id') or i.get('sub')})" for i in identity_set)


def _reject(cmd: StartCommand, check: str, user: str, admin: str) -> Rejection:
    who = (
        f"Globus effective identity: {cmd.effective_identity}; Globus username: {cmd.username};"
        f" identity set: {_describe_identities(cmd.identity_set)}"
    )
    return Rejection(check, user, f"{admin} (user endpoint {cmd.name}; {who})", cmd.endpoint_id)


def _elsewhere(cmd: StartCommand, ctx: DecisionContext) -> Rejection | None:
    """Credentials that lead to a broker other than ours."""
    if ctx.broker is None:
        return None
    creds = cmd.amqp_creds
    for key, info in (
        ("task_queue_info", creds.task_queue_info),
        ("result_queue_info", creds.result_queue_info),
        ("heartbeat_queue_info", creds.heartbeat_queue_info),
    ):
        where = BrokerAddress.of(rewrite_port(info.connection_url, ctx.amqp_port))
        if where != ctx.broker:
            return _reject(
                cmd,
                "broker",
                "Invalid server command: it names a message broker this endpoint does not use",
                f"amqp_creds.{key} leads to {where}, not to our broker {ctx.broker}",
            )
    return None


def _subs(identity_set: Sequence[dict]) -> set[str]:
    return {str(i.get("sub") or i.get("id")) for i in identity_set if i.get("sub") or i.get("id")}


def _identify(cmd: StartCommand, ctx: DecisionContext) -> tuple[LocalAccount, dict] | Rejection:
    """Who the command runs as, and the ep_info identity fields that go with it."""
    if ctx.map_identity is None:
        if ctx.owner is None or not _subs(cmd.identity_set) & ctx.owner_identities:
            return _reject(
                cmd,
                "untrusted_identity",
                "Ignoring start request for untrusted identity: this endpoint runs"
                " only for its owner",
                "identity set does not include the manager owner's identity",
            )
        return ctx.owner, {}
    outcome = ctx.map_identity(cmd.identity_set)
    if outcome.local_user is None:
        return _reject(
            cmd,
            "identity_mapping",
            "Identity failed to map to a local user name on this endpoint;"
            " ask the endpoint administrator to add a mapping for your identity",
            "no identity mapping rule matched: " + "; ".join(outcome.explain()[-5:]),
        )
    verdict = ctx.check_account(outcome.local_user)
    if isinstance(verdict, Refused):
        return _reject(cmd, f"policy:{verdict.rule}", verdict.user_message, verdict.admin_message)
    identity_info = {
        "globus_matched_identity": outcome.matched_identity_id,
        "globus_candidate_identities": outcome.candidates(),
    }
    return verdict, identity_info


def _over_limit(cmd: StartCommand, account: LocalAccount, ctx: DecisionContext) -> Rejection | None:
    mine = sum(1 for r in ctx.running.values() if r.account == account.name)
    per_user, total = ctx.limits.max_user_endpoints_per_user, ctx.limits.max_user_endpoints
    if per_user is not None and mine >= per_user:
        return _reject(
            cmd,
            "limit_per_user",
            f"You already have {mine} user endpoints running here (the limit is"
            f" {per_user}); wait for one to go idle or reuse its configuration",
            f"local user {account.name!r} is at the per-user limit of {per_user}",
        )
    if total is not None and len(ctx.running) >= total:
        return _reject(
            cmd,
            "limit_total",
            "This endpoint is running as many user endpoints as it may; try again later",
            f"total user endpoint limit {total} reached",
        )
    return None


def _refresh(cmd: StartCommand, account: LocalAccount, running: Running) -> Decision:
    """New credentials for a running user endpoint: only its own account, for its own id."""
    if running.account != account.name or running.endpoint_id != str(cmd.endpoint_id):
        refused = _reject(
            cmd,
            "refresh_mismatch",
            "Invalid server command: a user endpoint of that name already runs for someone else",
            f"refresh refused: {cmd.name} runs as {running.account!r} for"
            f" {running.endpoint_id}; the command maps to {account.name!r} for {cmd.endpoint_id}",
        )
        # Nobody is told: a report about the running endpoint's id would fail
        # its owner's waiting tasks, and the command's own claims are what is wrong.
        return dataclasses.replace(refused, endpoint_id=None)
    return Refresh(cmd)


def decide_start(cmd: StartCommand, ctx: DecisionContext) -> Decision:
    """Decide what to do with a well-formed start command."""
    elsewhere = _elsewhere(cmd, ctx)
    if elsewhere is not None:
        return elsewhere
    identified = _identify(cmd, ctx)
    if isinstance(identified, Rejection):
        return identified
    account, identity_info = identified
    if cmd.name in ctx.running:
        return _refresh(cmd, account, ctx.running[cmd.name])
    limited = _over_limit(cmd, account, ctx)
    if limited:
        return limited
    globus_id = identity_info.get("globus_matched_identity")
    prepared = ctx.prepare(cmd, account, mapped_identity(account, globus_id))
    if isinstance(prepared, Rejection):
        return prepared
    ep_info = {"posix_ppid": ctx.manager_pid, **identity_info}
    return LaunchPlan(cmd, account, prepared, ep_info)


def decide(props: Properties, body: bytes, now: float, ctx: DecisionContext) -> Decision:
    """The whole decision for one raw command from the command queue."""
    parsed = parse_command(props, body, now, ctx.command_sender)
    if isinstance(parsed, Rejection):
        running = {r.endpoint_id for r in ctx.running.values()}
        if parsed.check == "timestamp" and str(parsed.endpoint_id) in running:
            # A late command for an endpoint that runs fine: telling "the submitter"
            # would fail tasks it is about to run.
            return dataclasses.replace(parsed, endpoint_id=None)
        return parsed
    return decide_start(parsed, ctx)
