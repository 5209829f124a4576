"""Who may see, manage and submit to an endpoint: decided in pure code.

- The *owner* (the identity that registered it) and its *admins* (identity ids
  in the registration's ``admins``) may manage it: read it whether public or
  not, change its allowed functions, delete it. Only the owner may register it
  again, since that hands out the manager's broker account.
- Anyone may see and submit to a *public* endpoint; a non-public one only its
  owner and admins (stricter than the Globus cloud, where ``public`` only lists
  the endpoint: here, unlisted means closed).
- A submitter must satisfy the endpoint's *authentication policy* and may run
  only its *allowed functions*, when it has either.

Each check returns None or a :class:`Denied` with the status, the error code
the official service uses where there is one, and a message the submitter
can act on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from service import schema

DEFAULT_ASSURANCE_TIMEOUT_S = 30 * 60


@dataclasses.dataclass(frozen=True)
class Denied:
    """Why a caller may not do something."""

    status: int
    code: str
    message: str


def identity_ids(identities: Sequence[dict]) -> set[str]:
    return {str(i.get("id")) for i in identities if i.get("id")}


def can_manage(ep: schema.Endpoint, identities: Sequence[dict]) -> bool:
    mine = identity_ids(identities)
    return ep.owner_id in mine or bool(mine & {str(a) for a in ep.admins or ()})


def can_see(ep: schema.Endpoint, identities: Sequence[dict]) -> bool:
    return bool(ep.public) or can_manage(ep, identities)


def _domain(identity: dict) -> str | None:
    name = str(identity.get("username") or "")
    _, at, domain = name.rpartition("@")
    return domain.lower() if at and domain else None


def policy_denial(
    policy: schema.AuthPolicy, identities: Sequence[dict], token_age_s: float
) -> Denied | None:
    """Does the caller's identity set (and the age of its token) satisfy ``policy``?"""
    include = {d.lower() for d in policy.domain_constraints_include or ()}
    exclude = {d.lower() for d in policy.domain_constraints_exclude or ()}
    usable = [d for d in (_domain(i) for i in identities) if d and d not in exclude]
    if include and not set(usable) & include:
        return Denied(
            403,
            "AUTH_POLICY_NOT_SATISFIED",
            "this endpoint's authentication policy requires an identity from "
            f"{', '.join(sorted(include))}; link one to your client and try again",
        )
    if not include and exclude and not usable:
        return Denied(
            403,
            "AUTH_POLICY_NOT_SATISFIED",
            "this endpoint's authentication policy does not accept identities from "
            f"{', '.join(sorted(exclude))}",
        )
    if policy.high_assurance:
        limit = policy.authentication_assurance_timeout or DEFAULT_ASSURANCE_TIMEOUT_S
        if token_age_s > limit:
            return Denied(
                403,
                "AUTH_POLICY_NOT_SATISFIED",
                f"this endpoint requires an authentication from the last {limit} s;"
                " request a new access token and try again",
            )
    return None


def function_denial(ep: schema.Endpoint, function_ids: Iterable[str]) -> Denied | None:
    allowed = {str(f) for f in ep.allowed_functions or ()}
    refused = sorted(f for f in function_ids if allowed and f not in allowed)
    if refused:
        return Denied(
            403,
            "FUNCTION_NOT_PERMITTED",
            f"function(s) {', '.join(refused)} are not allowed on endpoint {ep.id};"
            " ask the endpoint's administrator which functions it runs",
        )
    return None
