"""Who may use an endpoint, and what each broker account may do: pure decisions."""

from __future__ import annotations

import re
import uuid

from service import access, broker_accounts, schema
from service.routing import Topology

TOPO = Topology("amqp://svc:pw@127.0.0.1:5672/v", "p.")
ALICE = {"id": "a1", "username": "alice@uni.edu"}
ALICE_LAB = {"id": "a2", "username": "alice@lab.org"}
BOB = {"id": "b1", "username": "bob@evil.org"}


def matches(pattern: str, name: str) -> bool:
    """RabbitMQ's rule: a resource is allowed when the regex matches (search) its name."""
    return re.search(pattern, name) is not None


def test_a_user_endpoint_account_reaches_its_own_resources_only():
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    grant = broker_accounts.user_endpoint_grant(TOPO, mine)
    assert grant.username == f"p.uep.{mine}"
    assert matches(grant.read, TOPO.task_queue(mine))
    for name in (
        TOPO.task_queue(other),
        TOPO.results_queue,
        TOPO.command_queue(mine),
        "amq.default",
    ):
        assert not matches(grant.read, name), name
    assert matches(grant.write, TOPO.results_exchange) and matches(
        grant.write, TOPO.heartbeats_exchange
    )
    for name in (TOPO.tasks_exchange, TOPO.commands_exchange, "amq.default", TOPO.results_queue):
        assert not matches(grant.write, name), name
    assert not matches(grant.configure, TOPO.task_queue(mine)) and not matches(grant.configure, "x")
    topics = {t.exchange: t for t in grant.topics}
    assert matches(topics["p.results"].write, f"{mine}.results")
    assert not matches(topics["p.results"].write, f"{other}.results")
    assert not matches(topics["p.results"].write, f"{mine}.results.x")
    assert not matches(topics["p.heartbeats"].write, f"{other}.heartbeats")


def test_a_manager_account_reads_its_commands_and_writes_its_heartbeats():
    ep = str(uuid.uuid4())
    grant = broker_accounts.manager_grant(TOPO, ep)
    assert matches(grant.read, TOPO.command_queue(ep))
    assert not matches(grant.read, TOPO.command_queue(str(uuid.uuid4())))
    assert not matches(grant.write, TOPO.commands_exchange)
    topics = {t.exchange: t for t in grant.topics}
    assert matches(topics["p.heartbeats"].write, f"{ep}.heartbeats")
    assert not matches(topics["p.results"].write, f"{ep}.results")


def test_an_sdk_account_reads_its_identitys_task_groups_only():
    grant = broker_accounts.sdk_grant(TOPO, "c1", "alice-id")
    tg = str(uuid.uuid4())
    assert matches(grant.read, TOPO.sdk_queue("alice-id", tg))
    assert not matches(grant.read, TOPO.sdk_queue("bob-id", tg))
    assert not matches(grant.read, TOPO.sdk_queue("alice-idx", tg))
    assert not matches(grant.read, TOPO.results_queue)
    assert grant.write == grant.configure == broker_accounts.NOTHING


def test_secrets_are_per_account_and_per_generation():
    key = b"k" * 32
    one = broker_accounts.derive_secret(key, "p.ep.x", 1)
    assert one == broker_accounts.derive_secret(key, "p.ep.x", 1)
    assert one != broker_accounts.derive_secret(key, "p.ep.x", 2)
    assert one != broker_accounts.derive_secret(key, "p.ep.y", 1)
    assert one != broker_accounts.derive_secret(b"j" * 32, "p.ep.x", 1)
    assert len(one) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", one)


def test_party_of_recognises_only_this_services_accounts():
    party = str(uuid.uuid4())
    assert broker_accounts.party_of(TOPO, f"p.uep.{party}") == ("uep", party)
    assert broker_accounts.party_of(TOPO, f"p.ep.{party}") == ("ep", party)
    for name in (f"uep.{party}", f"p.root.{party}", "p.ep.not-a-uuid", "guest", "p.", "p.sdk."):
        assert broker_accounts.party_of(TOPO, name) is None, name


def endpoint(**fields) -> schema.Endpoint:
    return schema.Endpoint(id="e", owner_id="a1", name="e", **fields)


def test_owner_and_admins_manage_public_means_anyone_may_use():
    private = endpoint(public=False, admins=["b1"])
    assert access.can_manage(private, [ALICE]) and access.can_manage(private, [BOB])
    assert not access.can_manage(private, [{"id": "c1", "username": "c@x.org"}])
    assert access.can_see(endpoint(public=True, admins=[]), [BOB])
    assert not access.can_see(endpoint(public=False, admins=[]), [BOB])
    assert access.can_manage(endpoint(admins=[]), [BOB, ALICE])  # a linked identity counts


def test_policy_domains_and_assurance():
    policy = schema.AuthPolicy(
        domain_constraints_include=["uni.edu"],
        domain_constraints_exclude=["evil.org"],
        high_assurance=True,
        authentication_assurance_timeout=600,
    )
    assert access.policy_denial(policy, [ALICE_LAB, ALICE], 10) is None
    denied = access.policy_denial(policy, [BOB], 10)
    assert denied.status == 403 and "uni.edu" in denied.message
    assert "600 s" in access.policy_denial(policy, [ALICE], 601).message
    only_exclude = schema.AuthPolicy(
        domain_constraints_include=[], domain_constraints_exclude=["evil.org"]
    )
    assert access.policy_denial(only_exclude, [BOB], 0).code == "AUTH_POLICY_NOT_SATISFIED"
    assert access.policy_denial(only_exclude, [BOB, ALICE], 0) is None


def test_allowed_functions_name_the_refused_ones():
    ep = endpoint(allowed_functions=["f1"])
    assert access.function_denial(ep, ["f1"]) is None
    denied = access.function_denial(ep, ["f1", "f2"])
    assert (
        denied.code == "FUNCTION_NOT_PERMITTED"
        and "f2" in denied.message
        and "f1," not in denied.message
    )
    assert access.function_denial(endpoint(allowed_functions=[]), ["anything"]) is None
