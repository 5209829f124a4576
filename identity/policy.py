"""The account policy: which local accounts a mapped identity may run as.

Applied after mapping and before anything runs. A mapping rule is an admin's
regular expression; one careless ``(.*)`` must not let a remote person run as
root, as the manager itself, or as ``daemon`` or ``slurm``. The official
endpoint has no such check (it runs whatever the mapping names, provided it
is not the manager's uid).

Every refusal speaks twice: ``user_message`` goes to the remote submitter and
never names the local account; ``admin_message`` goes to the log and does.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass

CONTACT = "contact the endpoint administrator"
PRIVILEGED = "privileged-account"


@dataclass(frozen=True)
class AccountPolicy:
    min_uid: int = 1000
    allow_system_accounts: tuple[str, ...] = ()
    allowed_groups: tuple[str, ...] = ()
    denied_users: tuple[str, ...] = ()


@dataclass(frozen=True)
class PasswdEntry:
    """A password-database record, before any policy has looked at it."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    gecos: str = ""


@dataclass(frozen=True)
class LocalAccount:
    """The local account to run as: what the policy allowed, the privileged edge
    switches to, and templates see as ``_GC.mapped_identity.local``."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str
    group_names: tuple[str, ...] = ()
    gecos: str = ""


@dataclass(frozen=True)
class Refused:
    user_message: str
    admin_message: str
    rule: str


def passwd_lookup(name: str) -> PasswdEntry | None:
    """The password-database entry for a name, None if there is none (or the name is unusable)."""
    try:
        entry = pwd.getpwnam(name)
    except (KeyError, ValueError, UnicodeEncodeError):
        return None
    return PasswdEntry(
        entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell, entry.pw_gecos
    )


def group_lookup(name: str, gid: int) -> tuple[tuple[int, str], ...]:
    """Every (gid, group name) the account belongs to, primary group first."""
    memberships = []
    for member_gid in dict.fromkeys([gid, *os.getgrouplist(name, gid)]):
        try:
            memberships.append((member_gid, grp.getgrgid(member_gid).gr_name))
        except KeyError:
            memberships.append((member_gid, str(member_gid)))
    return tuple(memberships)


def check_account(
    local_user: str,
    policy: AccountPolicy,
    manager_uid: int,
    *,
    lookup_user: Callable[[str], PasswdEntry | None] = passwd_lookup,
    lookup_groups: Callable[[str, int], tuple[tuple[int, str], ...]] = group_lookup,
) -> LocalAccount | Refused:
    """Decide whether the mapped ``local_user`` may run; the first failing rule refuses."""
    entry = lookup_user(local_user) if local_user else None
    if entry is None:
        return _refuse(
            "unknown-user",
            "your identity maps to a local account that does not exist on this endpoint",
            f"mapped local user {local_user!r} is not in the password database",
        )
    who = f"mapped local user {entry.name!r} (uid {entry.uid})"
    privileged = "your identity maps to a privileged account that never runs tasks"
    if entry.uid == 0:
        return _refuse("superuser", privileged, f"{who} is the superuser", PRIVILEGED)
    if entry.uid == manager_uid:
        return _refuse("manager-account", privileged, f"{who} is the manager's own", PRIVILEGED)
    if entry.name in policy.denied_users:
        return _refuse("denied_users", "your local account is denied", f"{who} is in denied_users")
    if entry.uid < policy.min_uid and entry.name not in policy.allow_system_accounts:
        return _refuse(
            "min_uid",
            "your identity maps to a system account",
            f"{who} is below min_uid {policy.min_uid} and not in allow_system_accounts",
        )
    memberships = lookup_groups(entry.name, entry.gid)
    names = tuple(name for _, name in memberships)
    if policy.allowed_groups and not set(names) & set(policy.allowed_groups):
        return _refuse(
            "allowed_groups",
            "your local account is not in a group allowed to use this endpoint",
            f"{who} is in groups {list(names)}, none of allowed_groups "
            f"{list(policy.allowed_groups)}",
        )
    return local_account(entry, memberships)


def local_account(
    entry: PasswdEntry, memberships: tuple[tuple[int, str], ...] | None = None
) -> LocalAccount:
    """The account an entry names, with its groups (looked up unless given)."""
    if memberships is None:
        memberships = group_lookup(entry.name, entry.gid)
    return LocalAccount(
        entry.name,
        entry.uid,
        entry.gid,
        tuple(gid for gid, _ in memberships),
        entry.home,
        entry.shell,
        tuple(name for _, name in memberships),
        entry.gecos,
    )


def own_account() -> LocalAccount:
    """The account this process runs as (an unprivileged manager's only account)."""
    entry = pwd.getpwuid(os.getuid())
    return local_account(
        PasswdEntry(
            entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell, entry.pw_gecos
        )
    )


def mapped_identity(account: LocalAccount, globus_id: str | None) -> dict:
    """``_GC.mapped_identity`` for templates: the local account and the Globus identity.

    The one shape both ``render-user-config`` and a real start give a template.
    """
    local = {
        "uname": account.name,
        "uid": account.uid,
        "gid": account.gid,
        "groups": list(account.groups),
        "gecos": account.gecos,
        "shell": account.shell,
        "dir": account.home,
    }
    return {"local": local, "globus": {"id": globus_id}}


def _refuse(rule: str, user_reason: str, admin_reason: str, shown_rule: str = "") -> Refused:
    """``shown_rule`` replaces a rule name that would itself tell the user too much."""
    return Refused(
        f"Refused by the endpoint's account policy ({shown_rule or rule}): {user_reason}; "
        f"{CONTACT}.",
        admin_reason,
        rule,
    )
