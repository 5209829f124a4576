"""The account policy as a table, with fake password/group databases.

The same rules against real local accounts: tests/integration/test_identity_policy_users.py.
"""

from __future__ import annotations

import pytest

from identity.policy import (
    AccountPolicy,
    LocalAccount,
    PasswdEntry,
    Refused,
    check_account,
)

MANAGER_UID = 990
PASSWD = {
    "root": PasswdEntry("root", 0, 0, "/root", "/bin/bash"),
    "toor": PasswdEntry("toor", 0, 0, "/root", "/bin/sh"),
    "daemon": PasswdEntry("daemon", 1, 1, "/usr/sbin", "/usr/sbin/nologin"),
    "slurm": PasswdEntry("slurm", 64030, 64030, "/var/lib/slurm", "/bin/false"),
    "svc": PasswdEntry("svc", 999, 999, "/srv", "/bin/sh"),
    "ca-manager": PasswdEntry("ca-manager", MANAGER_UID, 990, "/var/lib/mgr", "/bin/sh"),
    "alice": PasswdEntry("alice", 1001, 1001, "/home/alice", "/bin/bash"),
    "bob": PasswdEntry("bob", 1002, 1002, "/home/bob", "/bin/zsh"),
}
GROUPS = {
    "alice": ((1001, "alice"), (2000, "hpc-users")),
    "bob": ((1002, "bob"),),
    "slurm": ((64030, "slurm"),),
    "svc": ((999, "svc"), (2000, "hpc-users")),
    "daemon": ((1, "daemon"),),
}


def check(name, **policy):
    return check_account(
        name,
        AccountPolicy(**policy),
        MANAGER_UID,
        lookup_user=PASSWD.get,
        lookup_groups=lambda user, gid: GROUPS[user],
    )


# (local user, policy, rule that refuses)
REFUSALS = [
    ("nosuchuser", {}, "unknown-user"),
    ("", {}, "unknown-user"),
    ("root", {}, "superuser"),
    ("toor", {}, "superuser"),
    ("root", {"min_uid": 0, "allow_system_accounts": ("root",)}, "superuser"),
    ("ca-manager", {}, "manager-account"),
    ("ca-manager", {"min_uid": 0, "allow_system_accounts": ("ca-manager",)}, "manager-account"),
    ("daemon", {}, "min_uid"),
    ("svc", {}, "min_uid"),
    ("svc", {"allow_system_accounts": ("daemon",)}, "min_uid"),
    ("alice", {"min_uid": 5000}, "min_uid"),
    ("alice", {"denied_users": ("alice",)}, "denied_users"),
    ("svc", {"allow_system_accounts": ("svc",), "denied_users": ("svc",)}, "denied_users"),
    ("bob", {"allowed_groups": ("hpc-users",)}, "allowed_groups"),
    ("bob", {"allowed_groups": ("alice",)}, "allowed_groups"),
]


@pytest.mark.parametrize(("name", "policy", "rule"), REFUSALS)
def test_refusals_name_the_rule_and_hide_the_account_from_the_user(name, policy, rule):
    verdict = check(name, **policy)
    assert isinstance(verdict, Refused)
    assert verdict.rule == rule
    shown = "privileged-account" if rule in ("superuser", "manager-account") else rule
    assert f"({shown})" in verdict.user_message
    assert "administrator" in verdict.user_message
    if name:
        assert name not in verdict.user_message
        assert repr(name) in verdict.admin_message
    uid = PASSWD[name].uid if name in PASSWD else None
    if uid is not None:
        assert f"uid {uid}" in verdict.admin_message
        assert str(uid) not in verdict.user_message


# (local user, policy)
ALLOWED = [
    ("alice", {}),
    ("bob", {"denied_users": ("alice",)}),
    ("svc", {"allow_system_accounts": ("svc",)}),
    ("slurm", {}),
    ("daemon", {"min_uid": 0}),
    ("alice", {"allowed_groups": ("hpc-users",)}),
    ("alice", {"allowed_groups": ("alice", "other")}),
    ("svc", {"allow_system_accounts": ("svc",), "allowed_groups": ("hpc-users",)}),
]


@pytest.mark.parametrize(("name", "policy"), ALLOWED)
def test_allowed_accounts_carry_their_passwd_entry_and_groups(name, policy):
    verdict = check(name, **policy)
    entry = PASSWD[name]
    assert verdict == LocalAccount(
        entry.name,
        entry.uid,
        entry.gid,
        tuple(gid for gid, _ in GROUPS[name]),
        entry.home,
        entry.shell,
        tuple(group for _, group in GROUPS[name]),
        entry.gecos,
    )


def test_a_name_the_password_database_cannot_hold_is_unknown_not_a_crash():
    verdict = check_account("bad\x00name", AccountPolicy(), MANAGER_UID)
    assert isinstance(verdict, Refused) and verdict.rule == "unknown-user"
