"""The web app in a real browser: Debian's Chromium, headless, driven by Playwright.

Real everything behind it: the service on port 5000, RabbitMQ, a root manager,
local accounts, and researcher code run through the unmodified official SDK.
A researcher signs in, sees the endpoint online, watches tasks appear and
complete, reads a failed task's remote traceback and signs out; another
identity gets 404 for those tasks and sees none of the user endpoints; the
endpoint's admin sees the local accounts and rendered configs. A screenshot of
every page goes to the directory this module prints (``screenshots``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.appliance import client_env, local_accounts, running_manager, submit
from tests.fixtures_service import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the appliance test creates local users")
CHROMIUM = "/usr/bin/chromium"
CLIENT = REPO / "tests" / "e2e" / "webapp_client.py"
TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: 6
idle_heartbeats_hard: 60
engine:
  type: ThreadPoolEngine
  max_workers: 2
# label {{ label }}
"""
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "pattern": "^[a-z0-9-]+$"}},
    "additionalProperties": False,
}
WAIT_MS = 90_000
# Names of their own: the session's service on port 5000 keeps every other test's
# identities and tasks, and a shared alice@uni.edu would list theirs too.
TAG = uuid.uuid4().hex[:6]
ALICE, BOB = f"alice-{TAG}@uni.edu", f"bob-{TAG}@lab.org"
ALICE_KEY, BOB_KEY = ALICE.split("@")[0], BOB.split("@")[0]


@pytest.fixture(scope="module")
def manager(compute_service, tmp_path_factory):
    with local_accounts(2, "web") as (users, _group):
        alice, bob = users
        routes = {ALICE: alice.pw_name, BOB: bob.pw_name}
        root = tmp_path_factory.mktemp("web-endpoints")
        with running_manager(compute_service, root, routes, TEMPLATE, SCHEMA) as mgr:
            yield mgr


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run packaging/dev/ensure-chromium.sh (make test does)")
    playwright = sync_playwright().start()
    try:
        # --no-sandbox: Chromium refuses to run as root with its sandbox.
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory, request):
    """Where the screenshots go; named in the test output even when it is captured."""
    directory = tmp_path_factory.mktemp("screenshots")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nweb app screenshots: {directory}")
    return directory


def signed_in(chromium, service, creds: dict, shots: Path | None = None, name: str = ""):
    """A fresh browser context signed in through the form, as a person would."""
    from playwright.sync_api import expect

    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{service.url}/app/tasks")
    expect(page).to_have_url(f"{service.url}/app/login")
    page.get_by_label("Client ID").fill(creds["client_id"])
    page.get_by_label("Client secret").fill(creds["client_secret"])
    if shots:
        page.screenshot(path=shots / f"{name}-login.png")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{service.url}/app/endpoints")
    return context, page


def sdk(mgr, who: str, count: int, seconds: float, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CLIENT), mgr.id, str(count), str(seconds)],
        env=client_env(mgr.service, mgr.clients[who], tmp_path / f"sdk-{who}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen, mgr) -> dict:
    try:
        out, err = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode == 0, err[-3000:] + "\n--- manager log ---\n" + mgr.log()[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_a_researcher_watches_tasks_complete_and_reads_a_traceback(
    manager, chromium, shots, tmp_path
):
    from playwright.sync_api import expect

    service = manager.service
    context, page = signed_in(chromium, service, manager.clients[ALICE_KEY], shots, "alice")
    try:
        row = page.locator("#endpoints tbody tr", has_text=manager.id)
        expect(row.locator(".status")).to_have_text("online", timeout=WAIT_MS)
        expect(row).to_contain_text("admin@site.org")
        page.screenshot(path=shots / "endpoints.png", full_page=True)

        page.goto(f"{service.url}/app/tasks")
        running = sdk(manager, ALICE_KEY, 4, 2.0, tmp_path)
        try:
            pending = page.locator("#tasks tbody .status.pending")
            expect(pending.first).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#tasks tbody tr")).to_have_count(5, timeout=WAIT_MS)
            page.screenshot(path=shots / "tasks-pending.png", full_page=True)
        finally:
            outcome = finished(running, manager)
        expect(pending).to_have_count(0, timeout=WAIT_MS)
        expect(page.locator("#tasks tbody .status.success")).to_have_count(4)
        expect(page.locator("#tasks tbody .status.failed")).to_have_count(1)
        expect(page.locator("#tasks tbody tr", has_text="broken_division")).to_have_count(1)
        page.screenshot(path=shots / "tasks.png", full_page=True)
        assert "ZeroDivisionError" in outcome["error"]

        page.goto(f"{service.url}/app/tasks?status=failed")
        expect(page.locator("#tasks tbody tr")).to_have_count(1)
        page.locator("#tasks tbody tr a").first.click()
        expect(page).to_have_url(f"{service.url}/app/tasks/{outcome['failed']}")
        traceback = page.locator("#traceback")
        expect(traceback).to_contain_text("Traceback")
        expect(traceback).to_contain_text("ZeroDivisionError: division by zero")
        expect(traceback).to_contain_text("broken_division")
        page.screenshot(path=shots / "task-failed.png", full_page=True)

        page.goto(f"{service.url}/app/tasks/{outcome['ok'][0]}")
        expect(page.locator("#task-status")).to_have_text("success")
        expect(page.locator("dl.facts")).to_contain_text("DillDataBase64")
        page.screenshot(path=shots / "task-success.png", full_page=True)

        page.goto(f"{service.url}/app/endpoints/{manager.id}")
        mine = page.locator("#user-endpoints tbody tr")
        expect(mine).to_have_count(1)
        expect(mine).to_contain_text(ALICE)
        expect(mine).to_contain_text("5 (1)")  # done (failed)
        expect(page.locator("#user-endpoints")).not_to_contain_text(manager.users[0].pw_name)
        expect(page.locator("figure.chart rect.bar.success").first).to_be_visible()
        expect(page.locator("figure.chart rect.bar.latency").first).to_be_visible()
        page.screenshot(path=shots / "endpoint-researcher.png", full_page=True)

        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(f"{service.url}/app/login")
        page.screenshot(path=shots / "signed-out.png", full_page=True)
        page.goto(f"{service.url}/app/tasks/{outcome['failed']}")
        expect(page).to_have_url(f"{service.url}/app/login")
    finally:
        context.close()


@pytest.fixture(scope="module")
def alices_tasks(manager, tmp_path_factory):
    return submit(
        manager, ALICE_KEY, CLIENT, manager.id, "1", "0.1", user_dir=tmp_path_factory.mktemp("sdk")
    )


@pytest.mark.timeout(240)
def test_another_identity_gets_404_and_sees_no_user_endpoint_of_others(
    manager, chromium, shots, alices_tasks
):
    from playwright.sync_api import expect

    service = manager.service
    context, page = signed_in(chromium, service, manager.clients[BOB_KEY])
    try:
        for task_id in (alices_tasks["failed"], alices_tasks["ok"][0]):
            answer = page.goto(f"{service.url}/app/tasks/{task_id}")
            assert answer.status == 404
            expect(page.locator("h1")).to_have_text("Not found")
            expect(page.locator("main")).not_to_contain_text("ZeroDivisionError")
        page.screenshot(path=shots / "other-identity-404.png", full_page=True)
        page.goto(f"{service.url}/app/tasks")
        expect(page.locator("#tasks tbody tr")).to_have_count(0)
        expect(page.locator(".empty")).to_be_visible()
        answer = page.goto(f"{service.url}/app/endpoints/{manager.id}")
        assert answer.status == 200, "the endpoint is public: Bob may see it"
        expect(page.locator("main")).to_contain_text("No user endpoint of yours")
        expect(page.locator("#user-endpoints")).to_have_count(0)
        expect(page.locator("main")).not_to_contain_text(ALICE)
        page.screenshot(path=shots / "endpoint-other-identity.png", full_page=True)
    finally:
        context.close()


@pytest.mark.timeout(240)
def test_the_endpoints_admin_sees_local_accounts_and_rendered_configs(
    manager, chromium, shots, alices_tasks
):
    from playwright.sync_api import expect

    service, alice = manager.service, manager.users[0]
    admin = {  # the manager's owner: running_manager keeps its client in the manager's env
        "client_id": manager.env["GLOBUS_COMPUTE_CLIENT_ID"],
        "client_secret": manager.env["GLOBUS_COMPUTE_CLIENT_SECRET"],
    }
    context, page = signed_in(chromium, service, admin)
    try:
        page.goto(f"{service.url}/app/endpoints/{manager.id}")
        row = page.locator("#user-endpoints tbody tr", has_text=ALICE)
        expect(row).to_contain_text(alice.pw_name)
        page.locator("details.config summary").first.click()
        expect(page.locator("details.config pre").first).to_contain_text("ThreadPoolEngine")
        page.screenshot(path=shots / "endpoint-admin.png", full_page=True)
    finally:
        context.close()
