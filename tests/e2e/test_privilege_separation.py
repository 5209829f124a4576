"""The privilege split end to end: a root monitor, an unprivileged manager, rendering as the user.

Real everything, as in ``test_appliance.py``. These check what the split
promises: the manager holds no privilege and no root file; the monitor never
loads a parser or a network library, through a whole start, task and stop;
killing the manager takes every user endpoint down and a new manager serves;
``render-user-config`` (the admin's preview, as root) and a real start (the
user endpoint, as the researcher) render the same config; and one person
running the endpoint as themselves, without root, still works.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from mep.lifecycle import monitor_settings
from mep.monitor.channel import sealed_memfd
from templates.manager_config import load_manager_config
from tests.e2e.appliance import (
    ServiceSide,
    client_env,
    local_accounts,
    manager_children,
    run,
    running_manager,
    stop_manager,
    submit,
)
from tests.e2e.test_appliance import CLIENT, SCHEMA
from tests.processes import alive, processes_of

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creates local users and runs a root monitor"),
    pytest.mark.timeout(240),
]

MANAGER_ACCOUNT = pwd.getpwnam("compute-agent")
FORBIDDEN = ("yaml", "jinja2", "jsonschema", "pika", "parsl", "sqlalchemy", "globus_sdk", "dill")
TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: 60
idle_heartbeats_hard: 120
engine:
  type: ThreadPoolEngine
  max_workers: 2
# label {{ label }} only has to render
"""
# Records every module the monitor loaded, at its exit (forks never run atexit).
MODULE_RECORDER = """\
import atexit, json, sys
atexit.register(lambda: open(sys.argv[1], "w").write(json.dumps(sorted(sys.modules))))
from mep.monitor.__main__ import main
sys.exit(main())
"""
# The same for the manager, as the monitor's manager_program, writing beside itself.
MANAGER_RECORDER = """\
import atexit, json, os, sys
record = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "modules.json")
atexit.register(lambda: open(record, "w").write(json.dumps(sorted(sys.modules))))
from mep.manager_process import main
sys.exit(main())
"""
# What the long-lived manager never loads: the HTTP stack (only to register) and
# cryptography (to seal credentials) are its forked children's (wire.forked_call);
# asyncio is pika's adapter it never uses (wire.lean_pika); argparse would be there for one parse.
HTTP_STACK = ("globus_sdk", "requests", "urllib3", "jwt", "charset_normalizer", "idna", "certifi")
NOT_IN_MANAGER = (*HTTP_STACK, "cryptography", "asyncio", "argparse")


def _submit(mgr, who: str, tmp_path: Path, mode: str = "run") -> dict:
    return submit(mgr, who, CLIENT, mgr.id, mode, user_dir=tmp_path / f"sdk-{uuid.uuid4().hex}")


def manager_process(monitor_pid: int, timeout_s: float = 30.0) -> int:
    """The pid of the monitor's manager child, once it has one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
                if int(fields[1]) == monitor_pid and (
                    b"mep.manager_process" in cmdline
                    or cmdline.startswith(b"compute-agent manager")
                ):
                    return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"the monitor {monitor_pid} has no manager")


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


@pytest.fixture(scope="module")
def split(compute_service, tmp_path_factory):
    with local_accounts(1, "split") as (users, _group):
        routes = {"alice@uni.edu": users[0].pw_name}
        root = tmp_path_factory.mktemp("split")
        with running_manager(compute_service, root, routes, TEMPLATE, SCHEMA) as mgr:
            yield mgr


def test_the_manager_runs_as_its_own_account_with_nothing_of_root(split, tmp_path):
    out = _submit(split, "alice", tmp_path)
    assert out["whoami"]["user"] == split.users[0].pw_name
    monitor = status_of(split.process.pid)
    assert monitor["Uid"].split() == ["0"] * 4
    cmdline = Path(f"/proc/{split.process.pid}/cmdline").read_bytes()
    assert cmdline.startswith(b"compute-agent monitor")
    pid = manager_process(split.process.pid)
    manager = status_of(pid)
    assert manager["Uid"].split() == [str(MANAGER_ACCOUNT.pw_uid)] * 4
    assert manager["Gid"].split() == [str(MANAGER_ACCOUNT.pw_gid)] * 4
    assert manager["Groups"].split() == [str(MANAGER_ACCOUNT.pw_gid)]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(manager[cap], 16) == 0, cap
    held = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    in_endpoint_dir = {p for p in held if p.startswith(str(split.dir))}
    assert in_endpoint_dir == {str(split.dir / "endpoint.log")}, held
    users = [facts["uid"][0] for facts in manager_children(split.process.pid).values()]
    assert users and set(users) == {str(split.users[0].pw_uid)}


def test_killing_the_manager_stops_every_user_endpoint_and_a_new_one_serves(split, tmp_path):
    _submit(split, "alice", tmp_path)
    alice = split.users[0]
    assert processes_of(alice.pw_uid), "alice's user endpoint runs (idle for 5 minutes)"
    old = manager_process(split.process.pid)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while processes_of(alice.pw_uid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(alice.pw_uid) == {}, "every process of the user endpoint is gone"
    new = manager_process(split.process.pid)
    assert new != old and split.process.poll() is None
    log = split.log()
    assert "the manager died (signal 9); stopping every user endpoint" in log
    out = _submit(split, "alice", tmp_path)
    assert out["whoami"]["user"] == alice.pw_name


def test_the_monitor_loads_no_parser_and_the_manager_no_http_client(compute_service, tmp_path):
    """A whole start, task and stop through a monitor and a manager that record their
    modules at exit: the monitor loads no parser and no network library; the manager
    registered and started a user endpoint with sealed credentials (so it served the
    task) without ever loading the HTTP client stack, cryptography or asyncio."""
    wrapper_dir = Path(tempfile.mkdtemp(prefix="ca-recorder-", dir="/tmp"))
    try:
        wrapper_dir.chmod(0o755)
        (wrapper_dir / "manager.py").write_text(MANAGER_RECORDER)
        (wrapper_dir / "out").mkdir()
        os.chown(wrapper_dir / "out", MANAGER_ACCOUNT.pw_uid, MANAGER_ACCOUNT.pw_gid)
        monitor_modules = _record_modules(compute_service, tmp_path, wrapper_dir / "manager.py")
        manager_modules = json.loads((wrapper_dir / "out" / "modules.json").read_text())
    finally:
        shutil.rmtree(wrapper_dir)
    assert "mep.monitor.server" in monitor_modules and "mep.monitor.spawn" in monitor_modules
    loaded = sorted(m for m in monitor_modules if m.split(".")[0] in FORBIDDEN)
    assert loaded == [], f"the root monitor loaded {loaded}"
    assert "pika" in manager_modules and "wire.forked_call" in manager_modules
    loaded = sorted(m for m in manager_modules if m.split(".")[0] in NOT_IN_MANAGER)
    assert loaded == [], f"the long-lived manager loaded {loaded}"


def _record_modules(compute_service, tmp_path: Path, manager_program: Path) -> list[str]:
    with local_accounts(1, "mods") as (users, _group):
        routes = {"alice@uni.edu": users[0].pw_name}
        with running_manager(compute_service, tmp_path, routes, TEMPLATE, SCHEMA) as mgr:
            endpoint_id = mgr.id
            stop_manager(mgr)
            config = load_manager_config(mgr.dir / "config.yaml")
            settings = dataclasses.replace(
                monitor_settings("ep", mgr.dir, config, detached=False, debug=False),
                manager_program=str(manager_program),
            )
            stdin = sealed_memfd(settings.to_json().encode())
            record = tmp_path / "modules.json"
            with open(tmp_path / "monitor.err", "w") as err:
                mgr.process = subprocess.Popen(
                    [sys.executable, "-I", "-c", MODULE_RECORDER, str(record)],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                    env=mgr.env,
                )
            os.close(stdin)
            assert mgr.process.stdout.readline().strip() == endpoint_id
            assert _submit(mgr, "alice", tmp_path)["whoami"]["user"] == users[0].pw_name
            stop_manager(mgr)
            assert mgr.process.returncode == 0, (tmp_path / "monitor.err").read_text()
    return json.loads(record.read_text())


# ---- the admin's preview and a real start render the same config ------------------

INCLUDED = "engine:\n  type: ThreadPoolEngine\n  max_workers: {{ workers }}\n"
CORPUS = {
    "options and filters": (
        "engine: {type: ThreadPoolEngine, max_workers: {{ workers }}}\n"
        "endpoint_setup: echo {{ label | shell_escape }}\n"
        "allowed_functions: {{ functions }}\n",
        {"workers": 3, "label": "it's a; test", "functions": [str(uuid.UUID(int=7))]},
    ),
    "include": (
        "{% include 'engine.yaml.j2' %}\n# for {{ _GC.mapped_identity.local.uname }}\n",
        {"workers": 2},
    ),
    "gecos and the account": (
        "engine: {type: ThreadPoolEngine}\n"
        "display_name: {{ _GC.mapped_identity.local.gecos }}\n"
        "# {{ _GC.mapped_identity.local.uid }} {{ _GC.mapped_identity.local.dir }}"
        " {{ _GC.mapped_identity.local.groups }} {{ _GC.mapped_identity.globus.id }}\n",
        {},
    ),
    "runtime and parent config": (
        "engine: {type: ThreadPoolEngine}\n"
        "# python {{ _GC.user_runtime.python.version }} on {{ _GC.user_runtime.platform.node }}\n"
        "# parent {{ _GC.parent_config.display_name }} {{ _GC.parent_config.heartbeat_period }}\n"
        "# template at {{ _GC.parent_config.user_config_template_path }}\n",
        {},
    ),
}
RUNTIME = {
    "globus_compute_sdk_version": "4.19.0",
    "python": {"version": "3.11.2"},
    "platform": {"node": "laptop: 'x'"},
}


@pytest.fixture(scope="module")
def template_dir():
    """Templates and includes where the researchers may read them (includes are read as them)."""
    path = Path(tempfile.mkdtemp(prefix="ca-templates-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def preview_and_start(compute_service, tmp_path_factory, template_dir):
    with local_accounts(1, "render") as (users, _group):
        alice = users[0]
        run("usermod", "-c", 'Alice O\'Neil, Lab 3: "top" #1', alice.pw_name)
        routes = {"alice@uni.edu": alice.pw_name}
        root = tmp_path_factory.mktemp("render")
        template = template_dir / "main.yaml.j2"
        template.write_text(TEMPLATE)
        config = f"user_config_template_path: {template}\ndisplay_name: 'render test'\n"
        with running_manager(compute_service, root, routes, TEMPLATE, {}, config=config) as mgr:
            side = ServiceSide(mgr)
            try:
                yield mgr, side, pwd.getpwnam(alice.pw_name)
            finally:
                side.close()


@pytest.mark.parametrize("case", CORPUS)
def test_the_preview_and_a_real_start_render_the_same_config(
    preview_and_start, template_dir, tmp_path, case
):
    mgr, side, alice = preview_and_start
    text, options = CORPUS[case]
    (template_dir / "main.yaml.j2").write_text(text)
    (template_dir / "engine.yaml.j2").write_text(INCLUDED)
    for path in template_dir.iterdir():
        path.chmod(0o644)
    identity = str(uuid.uuid4())
    command = side.command("alice@uni.edu")
    command["globus_effective_identity"] = identity
    command["globus_identity_set"][0].update(id=identity, sub=identity)
    command["kwargs"].update(user_opts=options, user_runtime=RUNTIME)
    side.publish(command)
    rendered = Path(
        alice.pw_dir, ".compute_agent", command["kwargs"]["name"], "rendered_config.yaml"
    )
    deadline = time.monotonic() + 60
    while not rendered.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rendered.exists(), mgr.log()[-3000:]
    (tmp_path / "options.json").write_text(json.dumps(options))
    (tmp_path / "runtime.json").write_text(json.dumps(RUNTIME))
    preview = run(
        *mgr.cli,
        "render-user-config",
        "-e",
        "ep",
        "--config-dir",
        str(mgr.root),
        "-o",
        str(tmp_path / "options.json"),
        "--user-runtime",
        str(tmp_path / "runtime.json"),
        "--user",
        alice.pw_name,
        "--globus-id",
        identity,
    )
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout == rendered.read_text()
    assert "ThreadPoolEngine" in preview.stdout


# ---- one person, no root ------------------------------------------------------------

SOLO_TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: 2
engine:
  type: ThreadPoolEngine
"""


def test_one_person_runs_the_endpoint_as_themselves_without_root(compute_service, tmp_path):
    with local_accounts(1, "solo") as (users, _group):
        solo = users[0]
        client = compute_service.add_client("solo@uni.edu")
        as_solo = {"user": solo.pw_uid, "group": solo.pw_gid, "extra_groups": [], "cwd": "/"}
        env = client_env(compute_service, client)
        env.pop("PYTHONPATH")  # the installed copy: solo cannot read the checkout
        env.update(HOME=solo.pw_dir, USER=solo.pw_name, LOGNAME=solo.pw_name)
        cli = [sys.executable, "-m", "mep.cli"]
        done = subprocess.run(
            [*cli, "configure", "mine"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            **as_solo,
        )
        assert done.returncode == 0, done.stderr
        directory = Path(solo.pw_dir, ".compute_agent", "mine")
        (directory / "user_config_template.yaml.j2").write_text(SOLO_TEMPLATE)
        os.chown(directory / "user_config_template.yaml.j2", solo.pw_uid, solo.pw_gid)
        process = subprocess.Popen(
            [*cli, "start", "mine"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **as_solo,
        )
        try:
            endpoint_id = process.stdout.readline().strip()
            assert process.poll() is None, process.stderr.read()
            uuid.UUID(endpoint_id)
            assert status_of(process.pid)["Uid"].split()[0] == str(solo.pw_uid)
            manager = manager_process(process.pid)
            assert status_of(manager)["Uid"].split() == [str(solo.pw_uid)] * 4
            result = run(
                sys.executable,
                str(CLIENT),
                endpoint_id,
                "run",
                env=dict(
                    client_env(compute_service, client), GLOBUS_COMPUTE_USER_DIR=str(tmp_path)
                ),
                timeout=200,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            whoami = json.loads(result.stdout.strip().splitlines()[-1])["whoami"]
            assert whoami["user"] == solo.pw_name and whoami["uid"] == solo.pw_uid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        assert process.returncode == 0
        assert not alive(manager)
