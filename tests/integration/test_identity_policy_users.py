"""The account policy against real local accounts created with useradd (needs root)."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from types import SimpleNamespace

import pytest

from identity.policy import AccountPolicy, LocalAccount, Refused, check_account
from tests.accounts import admin_command

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates local users: needs root"),
]


@pytest.fixture
def local_users():
    """Create ``ca-idt-<random>`` users and groups; all are deleted afterwards."""
    users, groups = [], []

    def user(*, system: bool = False, groups_: tuple[str, ...] = ()) -> pwd.struct_passwd:
        name = f"ca-idt-{secrets.token_hex(4)}"
        argv = ["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin"]
        argv += ["-r"] if system else []
        argv += ["-G", ",".join(groups_)] if groups_ else []
        admin_command(*argv, name)
        users.append(name)
        return pwd.getpwnam(name)

    def group() -> str:
        name = f"ca-idt-g{secrets.token_hex(4)}"
        admin_command("groupadd", name)
        groups.append(name)
        return name

    yield SimpleNamespace(user=user, group=group)
    for name in users:
        subprocess.run(["userdel", name], capture_output=True)
    for name in groups:
        subprocess.run(["groupdel", name], capture_output=True)
    leftovers = [name for name in users if _exists(name)]
    assert leftovers == [], f"could not delete test users {leftovers}"


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


MANAGER_UID = os.getuid()


def test_regular_user_is_allowed_with_its_real_groups(local_users):
    extra = local_users.group()
    account = local_users.user(groups_=(extra,))
    verdict = check_account(account.pw_name, AccountPolicy(), MANAGER_UID)
    assert isinstance(verdict, LocalAccount)
    assert (verdict.name, verdict.uid, verdict.gid) == (
        account.pw_name,
        account.pw_uid,
        account.pw_gid,
    )
    assert verdict.groups == tuple(
        dict.fromkeys([account.pw_gid, *os.getgrouplist(account.pw_name, account.pw_gid)])
    )
    assert extra in verdict.group_names
    assert (verdict.home, verdict.shell) == ("/nonexistent", "/usr/sbin/nologin")


def test_system_account_is_refused_unless_allow_listed(local_users):
    account = local_users.user(system=True)
    assert account.pw_uid < 1000
    refused = check_account(account.pw_name, AccountPolicy(), MANAGER_UID)
    assert isinstance(refused, Refused) and refused.rule == "min_uid"
    assert account.pw_name in refused.admin_message
    assert account.pw_name not in refused.user_message
    allowed = check_account(
        account.pw_name, AccountPolicy(allow_system_accounts=(account.pw_name,)), MANAGER_UID
    )
    assert isinstance(allowed, LocalAccount) and allowed.uid == account.pw_uid


def test_allowed_groups_admits_members_only(local_users):
    members = local_users.group()
    member = local_users.user(groups_=(members,))
    outsider = local_users.user()
    policy = AccountPolicy(allowed_groups=(members,))
    assert isinstance(check_account(member.pw_name, policy, MANAGER_UID), LocalAccount)
    refused = check_account(outsider.pw_name, policy, MANAGER_UID)
    assert isinstance(refused, Refused) and refused.rule == "allowed_groups"
    assert members in refused.admin_message


def test_denied_user_is_refused(local_users):
    account = local_users.user()
    refused = check_account(
        account.pw_name, AccountPolicy(denied_users=(account.pw_name,)), MANAGER_UID
    )
    assert isinstance(refused, Refused) and refused.rule == "denied_users"


def test_the_managers_own_account_is_refused(local_users):
    account = local_users.user()
    refused = check_account(account.pw_name, AccountPolicy(), manager_uid=account.pw_uid)
    assert isinstance(refused, Refused) and refused.rule == "manager-account"
    assert account.pw_name not in refused.user_message


def test_root_is_refused_even_when_allow_listed():
    refused = check_account(
        "root", AccountPolicy(min_uid=0, allow_system_accounts=("root",)), manager_uid=12345
    )
    assert isinstance(refused, Refused) and refused.rule == "superuser"
    assert "root" not in refused.user_message


def test_a_deleted_account_is_unknown(local_users):
    account = local_users.user()
    subprocess.run(["userdel", account.pw_name], check=True, capture_output=True)
    refused = check_account(account.pw_name, AccountPolicy(), MANAGER_UID)
    assert isinstance(refused, Refused) and refused.rule == "unknown-user"
    assert account.pw_name not in refused.user_message
