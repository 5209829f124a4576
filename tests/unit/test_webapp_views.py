"""The web app's pure decisions: who sees which user endpoint and what of it, states,
CSRF tokens, cookie flags, the CSP, page formatting and the charts' numbers."""

from __future__ import annotations

import pytest

from service import schema
from service.webapp import charts, display, signin, views

NOW = 1_800_000_000.0
OWNER = {"id": "o1", "username": "owner@site.org"}
ADMIN = {"id": "a1", "username": "admin@site.org"}
ALICE = {"id": "al", "username": "alice@uni.edu"}
BOB = {"id": "bo", "username": "bob@lab.org"}


def endpoint(**kw) -> schema.Endpoint:
    fields = {"id": "e1", "owner_id": "o1", "name": "ep", "public": True, "admins": ["a1"]}
    return schema.Endpoint(**{**fields, **kw})


def uep(identity: str, **kw) -> schema.UserEndpoint:
    return schema.UserEndpoint(
        id=f"u-{identity}", endpoint_id="e1", identity_id=identity, name=f"uep.{identity}", **kw
    )


RUNNING = {
    "heartbeat_period": 5,
    "active": True,
    "start_unix": NOW - 60,
    "posix_username": "alice-local",
    "config_raw": "engine:\n  type: ThreadPoolEngine\n",
    "outstanding_tasks": 2,
}


def test_admins_see_every_user_endpoint_researchers_only_their_own():
    ueps = [uep("al"), uep("bo")]
    for who in (OWNER, ADMIN):
        assert views.visible_user_endpoints(endpoint(), ueps, [who]) == ueps
    assert [u.identity_id for u in views.visible_user_endpoints(endpoint(), ueps, [ALICE])] == [
        "al"
    ]
    assert views.visible_user_endpoints(endpoint(), ueps, [{"id": "x"}]) == []


def test_local_accounts_and_configs_reach_only_an_admins_eyes():
    row = uep("al", last_heartbeat=NOW - 1, heartbeat_period=5, last_state=RUNNING)
    as_admin = views.user_endpoint_row(row, "alice@uni.edu", {}, admin=True, now=NOW)
    as_self = views.user_endpoint_row(row, "alice@uni.edu", {}, admin=False, now=NOW)
    assert (as_admin.local_user, as_admin.config) == ("alice-local", RUNNING["config_raw"])
    assert (as_self.local_user, as_self.config) == (None, None)
    assert as_self.running == 2 and as_self.state == "running"


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({}, "not started"),
        ({"last_heartbeat": NOW - 1, "heartbeat_period": 5, "last_state": RUNNING}, "running"),
        ({"last_heartbeat": NOW - 100, "heartbeat_period": 5, "last_state": RUNNING}, "stopped"),
        (
            {"last_heartbeat": NOW - 1, "heartbeat_period": 5, "last_state": {"active": False}},
            "stopped",
        ),
        (
            {"last_heartbeat": NOW - 1, "heartbeat_period": 3, "last_state": {"error": "no"}},
            "failed",
        ),
    ],
)
def test_a_user_endpoints_state_follows_its_heartbeats(fields, state):
    assert views.user_endpoint_state(uep("al", **fields), NOW)[0] == state


def test_a_running_user_endpoint_is_running_since_it_started():
    row = uep("al", last_heartbeat=NOW - 1, heartbeat_period=5, last_state=RUNNING)
    assert views.user_endpoint_state(row, NOW) == ("running", NOW - 60)


def test_a_hostile_heartbeat_cannot_break_the_admins_page():
    state = {**RUNNING, "start_unix": 1e300, "outstanding_tasks": "many", "config_raw": 7}
    row = uep("al", last_heartbeat=NOW - 1, heartbeat_period=5, last_state=state)
    shown = views.user_endpoint_row(row, "alice@uni.edu", {}, admin=True, now=NOW)
    assert (shown.since, shown.running, shown.config) == ("—", None, None)


def test_counts_split_pending_from_done_and_failed():
    counts = {"waiting-for-ep": 3, "success": 5, "failed": 2}
    row = views.user_endpoint_row(uep("al"), "alice@uni.edu", counts, admin=False, now=NOW)
    assert (row.pending, row.done, row.failed, row.running) == (3, 7, 2, None)


def test_an_endpoint_row_counts_only_live_user_endpoints():
    live = uep("al", last_heartbeat=NOW - 1, heartbeat_period=5, last_state=RUNNING)
    gone = uep("bo", last_heartbeat=NOW - 1, heartbeat_period=5, last_state={"active": False})
    ep = endpoint(last_heartbeat=NOW - 10, heartbeat_period=30, last_state={"active": True})
    row = views.endpoint_row(ep, "owner@site.org", [live, gone], [ALICE], NOW)
    assert (row.online, row.live_user_endpoints, row.manager) == (True, 1, False)
    assert row.heartbeat == "10 s ago"
    goodbye = endpoint(last_heartbeat=NOW - 1, heartbeat_period=0)
    assert not views.endpoint_row(goodbye, "o", [], [OWNER], NOW).online


def test_status_filters_accept_labels_and_stored_names_only():
    assert views.status_filter("pending") == views.status_filter("waiting-for-ep")
    assert views.status_filter("") is None and views.status_filter("failed") == "failed"
    with pytest.raises(ValueError, match="unknown status"):
        views.status_filter("running'; drop table tasks")


def test_a_sessions_csrf_token_is_its_own_and_compared_strictly():
    one, two = signin.session_csrf("token-one"), signin.session_csrf("token-two")
    assert one != two and len(one) == 64
    assert signin.csrf_matches(one, one)
    for given in (two, "", None, one[:-1]):
        assert not signin.csrf_matches(one, given)
    assert not signin.csrf_matches(None, None) and not signin.csrf_matches("", "")


def test_cookies_are_httponly_strict_scoped_and_expiring():
    options = signin.cookie_options(7200, secure=True)
    assert options["httponly"] and options["samesite"] == "strict" and options["secure"]
    assert options["path"] == "/app" and options["max_age"] == options["expires"] == 7200


def test_the_csp_allows_only_our_own_scripts_and_styles():
    policy = dict(p.split(" ", 1) for p in signin.CONTENT_SECURITY_POLICY.split("; "))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in signin.CONTENT_SECURITY_POLICY


def test_form_fields_take_the_first_value_and_cut_long_ones():
    raw = b"client_id=a&client_id=b&client_secret=" + b"x" * 5000 + b"&csrf=%3Cz%3E"
    fields = signin.form_fields(raw)
    assert fields["client_id"] == "a" and fields["csrf"] == "<z>"
    assert len(fields["client_secret"]) == signin.MAX_FIELD_CHARS
    assert signin.form_fields(b"\xff\xfe=\x00") == {"\ufffd\ufffd": "\x00"}


def test_times_durations_and_sizes_read_well():
    assert display.when(0) == "1970-01-01 00:00:00 UTC" and display.when(None) == "—"
    assert display.when(1e300) == display.when(-1e20) == display.when(float("nan")) == "—"
    assert [display.span(s) for s in (0.123, 42, 185, 7300, -1)] == [
        "0.12 s",
        "42 s",
        "3 min 5 s",
        "2 h 1 min",
        "0.00 s",
    ]
    assert display.age(None, NOW) == "never" and display.age(NOW + 5, NOW) == "0.00 s ago"
    assert [display.size(n) for n in (12, 2048, 3 << 20)] == ["12 B", "2.0 kB", "3.0 MB"]


def test_tasks_are_counted_in_the_minute_they_finished():
    finished = [(NOW - 10, "success"), (NOW - 70, "failed"), (NOW - 75, "success")]
    finished += [(NOW - 3600, "success"), (NOW + 5, "success"), (NOW - 30, "weird")]
    counts = charts.per_minute(finished, NOW)
    assert counts["success"][-1] == 1 and counts["success"][-2] == 1
    assert counts["failed"][-2] == 1
    assert sum(counts["success"]) == 2 and sum(counts["failed"]) == 1


def test_latencies_fall_in_half_open_bins():
    bins = charts.latency_bins([0.05, 0.1, 0.99, 1.0, 4000])
    names = charts.bin_names()
    assert len(bins) == len(names) == len(charts.LATENCY_EDGES) + 1
    assert bins[0] == 1 and bins[1] == 1 and bins[3] == 1 and bins[4] == 1 and bins[-1] == 1
    assert names[0] == "<0.1s" and names[1] == "0.1s-0.25s" and names[-1] == "≥30m"
    assert charts.axis_names()[1] == "<0.25s" and len(charts.axis_names()) == len(names)


def test_chart_bars_stay_inside_the_drawing_and_scale_to_the_busiest_minute():
    counts = {"success": [0] * 59 + [10], "failed": [0] * 58 + [5, 10]}
    chart = charts.throughput_chart(counts)
    assert chart.total == 25
    for bar in chart.bars:
        assert bar.x >= 0 and bar.x + bar.width <= chart.width
        assert bar.y >= charts.PAD_TOP - 1e-9 and bar.y + bar.height <= chart.baseline + 1e-9
    tallest = [b for b in chart.bars if b.x == max(b.x for b in chart.bars)]
    assert sum(b.height for b in tallest) == pytest.approx(chart.baseline - charts.PAD_TOP)
    assert charts.throughput_chart({"success": [0] * 60, "failed": [0] * 60}).bars == []
    latency = charts.latency_chart([0, 3, 0, 1] + [0] * 8)
    assert [b.title for b in latency.bars] == [
        "3 task(s) took 0.1s-0.25s",
        "1 task(s) took 0.5s-1s",
    ]


def test_the_task_list_does_not_load_results_tracebacks_or_details(tmp_path):
    """200 results of up to 10 MB each would cost the service gigabytes per poll."""
    from sqlalchemy import inspect

    from service import schema, store
    from service.webapp import queries

    sessions = store.open_database(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with sessions.begin() as s:
            s.add(schema.TaskGroup(id="g", owner_id="o"))
            s.flush()
            s.add(
                schema.Task(
                    id="t",
                    task_group_id="g",
                    owner_id="o",
                    function_id="f",
                    endpoint_id="e",
                    user_endpoint_id="u",
                    created_t=1.0,
                    result="x" * 1_000_000,
                    exception="tb",
                    details={"k": 1},
                )
            )
        with sessions() as s:
            [task] = queries.tasks_of(s, "o", None, None)
            unloaded = inspect(task).unloaded
        assert {"result", "exception", "details"} <= unloaded
    finally:
        store.dispose(sessions)
