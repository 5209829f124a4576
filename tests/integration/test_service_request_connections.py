"""A request holds at most one database connection at a time.

A handler that opens sessions of its own (a submit does) while the request's
session still holds the connection its caller lookup used needs two; once as
many requests as the pool has connections do that at once, each waits for a
second connection that none will give back, until the pool's timeout.
"""

from __future__ import annotations

import types

import pytest
from starlette.requests import Request

from service import auth, context, schema, store


@pytest.fixture
def sessions(db_url):
    factory = store.open_database(db_url)
    yield factory
    store.dispose(factory)


def _request_with(token: str) -> Request:
    return Request({"type": "http", "headers": [(b"authorization", f"Bearer {token}".encode())]})


def test_the_caller_lookup_gives_its_connection_back_before_the_handler_runs(sessions):
    with sessions.begin() as s:
        client, _ = auth.add_client(s, "fay@uni.edu", [], None)
        [issued] = auth.issue_tokens(s, client, auth.COMPUTE_SCOPE, ttl_s=60)
    pool = sessions.kw["bind"].pool
    request_session = context.db(types.SimpleNamespace(sessions=sessions))
    s = next(request_session)
    who = context.any_caller(_request_with(issued.access_token), s)
    assert who.identities[0]["username"] == "fay@uni.edu"
    assert pool.checkedout() == 0
    s.add(schema.TaskGroup(id="g-1", owner_id=who.identity_id))  # the handler's own work
    with pytest.raises(StopIteration):
        next(request_session)  # the handler returned: its work is committed
    assert pool.checkedout() == 0
    with sessions() as check:
        assert check.get(schema.TaskGroup, "g-1").owner_id == who.identity_id


def test_a_failed_handler_leaves_nothing_behind(sessions):
    with sessions.begin() as s:
        client, _ = auth.add_client(s, "gus@uni.edu", [], None)
        [issued] = auth.issue_tokens(s, client, auth.COMPUTE_SCOPE, ttl_s=60)
    request_session = context.db(types.SimpleNamespace(sessions=sessions))
    s = next(request_session)
    context.any_caller(_request_with(issued.access_token), s)
    s.add(schema.TaskGroup(id="g-2", owner_id="x"))
    with pytest.raises(RuntimeError):
        request_session.throw(RuntimeError("the handler failed"))
    assert sessions.kw["bind"].pool.checkedout() == 0
    with sessions() as check:
        assert check.get(schema.TaskGroup, "g-2") is None
