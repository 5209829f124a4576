"""Containment on this machine's real cgroupfs (as root): cells, limits, the warden, the floor."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from mep.monitor.containment import Containment, Layout, current_layout
from tests.processes import alive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writes cgroupfs")
LAYOUT = current_layout()
needs_v2 = pytest.mark.skipif(LAYOUT.unified is None, reason="no cgroup v2 mount here")

# A process that leaves a daemon in a new session, ignoring SIGTERM, then
# prints the daemon's pid and sleeps: what a provider block or a researcher does.
LEAVE_DAEMON = textwrap.dedent(
    """
    import os, signal, sys, time
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(w, str(os.getpid()).encode())
            time.sleep(600)
        os._exit(0)
    print(os.read(r, 32).decode(), flush=True)
    time.sleep(600)
    """
)


def spawn_in(fds: tuple[int, ...], code: str) -> subprocess.Popen:
    """A Python child that joins the cell (as the manager's forked child does) first."""

    def join() -> None:
        for fd in fds:
            os.write(fd, b"0")

    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, preexec_fn=join
    )


@pytest.fixture
def containment():
    made = Containment(LAYOUT, str(uuid.uuid4()), processes_per_user=30)
    made.prepare()
    yield made
    made.close()


@needs_v2
def test_releasing_a_cell_takes_every_process_it_holds(containment):
    cell = containment.cell("nobody", "uep.one")
    fds = cell.join_fds()
    try:
        leader = spawn_in(fds, LEAVE_DAEMON)
    finally:
        for fd in fds:
            os.close(fd)
    daemon = int(leader.stdout.readline())
    assert alive(daemon) and cell.populated()
    assert str(leader.pid) in (cell.unified / "cgroup.procs").read_text().split()
    containment.release("uep.one")
    leader.wait(5)
    deadline = time.monotonic() + 5
    while alive(daemon) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(daemon), "the daemon outlived its cell"
    assert not cell.unified.exists() and not (cell.unified.parent).exists()


@needs_v2
def test_a_process_limit_covers_everything_in_the_accounts_cells(containment):
    cells = [containment.cell("limited", f"uep.{i}") for i in range(2)]
    limit_file = next(
        d.parent / "pids.max" for c in cells for d in c.dirs if (d.parent / "pids.max").exists()
    )
    assert limit_file.read_text().strip() == "30"
    fds = cells[0].join_fds()
    code = textwrap.dedent(
        """
        import os, time
        n = 0
        try:
            for _ in range(100):
                if os.fork() == 0:
                    os.close(1)
                    time.sleep(30)
                    os._exit(0)
                n += 1
        except BlockingIOError:
            print("refused after", n, flush=True)
        """
    )
    try:
        child = spawn_in(fds, code)
    finally:
        for fd in fds:
            os.close(fd)
    out, _ = child.communicate(timeout=30)
    assert out.startswith("refused after"), out
    assert int(out.split()[-1]) < 30
    containment.release("uep.0")
    containment.release("uep.1")


WARDEN_MANAGER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from mep.monitor.containment import Containment, current_layout
    box = Containment(current_layout(), sys.argv[1])
    box.prepare()
    box.start_warden()
    cell = box.cell("nobody", "uep.w")
    fds = cell.join_fds()
    def join():
        for fd in fds:
            os.write(fd, b"0")
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2]], stdout=subprocess.PIPE,
                             text=True, preexec_fn=join)
    print(child.pid, child.stdout.readline().strip(), box.unified_base, flush=True)
    time.sleep(600)
    """
)


@needs_v2
def test_the_warden_kills_every_cell_when_the_manager_is_killed():
    endpoint_id = str(uuid.uuid4())
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    manager = subprocess.Popen(
        [sys.executable, "-c", WARDEN_MANAGER, endpoint_id, LEAVE_DAEMON],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        leader, daemon, base = manager.stdout.readline().split()
        assert alive(int(daemon)) and Path(base).is_dir()
        manager.kill()
        manager.wait(5)
        deadline = time.monotonic() + 5
        while (alive(int(daemon)) or alive(int(leader))) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(int(daemon)) and not alive(int(leader))
        while Path(base).exists() and time.monotonic() < deadline + 2:
            time.sleep(0.05)
        assert not Path(base).exists(), "the warden left the cgroups behind"
    finally:
        if manager.poll() is None:
            manager.kill()
        with contextlib.suppress(NameError, ValueError, ProcessLookupError):
            os.kill(int(daemon), signal.SIGKILL)


@needs_v2
def test_the_warden_holds_nothing_of_the_monitors_and_leaves_on_a_normal_stop():
    """In the test process itself (the monitor's role): the warden is a shell with
    its pipe and /dev/null, ignores stray stop signals, and exits on "stop"."""
    box = Containment(LAYOUT, str(uuid.uuid4()))
    box.prepare()
    held = os.pipe()  # descriptors of the "monitor's" that must not reach the warden
    os.set_inheritable(held[0], True)
    try:
        box.start_warden()
        warden = box.warden_pid
        deadline = time.monotonic() + 5
        while not Path(f"/proc/{warden}/cmdline").read_bytes().startswith(b"compute-agent warden"):
            assert time.monotonic() < deadline, "the warden did not exec its shell"
            time.sleep(0.02)
        fds = {int(fd.name): os.readlink(fd) for fd in Path(f"/proc/{warden}/fd").iterdir()}
        assert fds[0].startswith("pipe:") and fds[1] == fds[2] == os.devnull, fds
        others = {fd: target for fd, target in fds.items() if fd > 2}
        assert all(target.endswith("mep/monitor/warden.sh") for target in others.values()), fds
        os.kill(warden, signal.SIGTERM)  # e.g. the whole group signalled: ignored
        time.sleep(0.3)
        assert alive(warden)
        base = box.unified_base
        box.close()
        assert not alive(warden) and box.warden_pid is None
        assert not base.exists()
    finally:
        for fd in held:
            os.close(fd)
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(warden, signal.SIGKILL)


FLOOR = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from mep.monitor.children import ChildTable
    from mep.monitor.containment import Containment, Layout
    box = Containment(Layout(unified=None), sys.argv[1])
    box.prepare()
    assert not box.contained
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2]], stdout=subprocess.PIPE, text=True)
    daemon = int(child.stdout.readline())
    child.kill(); child.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{daemon}/status") as f:
            if f"PPid:\\t{os.getpid()}" in f.read():
                break
        time.sleep(0.05)
    else:
        print("never adopted"); sys.exit(1)
    reaped = ChildTable().reap_orphans(everyone=True)
    print(daemon, reaped, flush=True)
    """
)


def test_without_cgroups_the_manager_adopts_and_kills_orphans():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run(
        [sys.executable, "-c", FLOOR, str(uuid.uuid4()), LEAVE_DAEMON],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    daemon, reaped = done.stdout.split(" ", 1)
    assert daemon in reaped and not alive(int(daemon))


def test_no_v2_and_no_limits_is_the_floor_not_an_error():
    box = Containment(Layout(unified=None), str(uuid.uuid4()))
    cell = box.cell("nobody", "uep.x")
    assert cell.dirs == () and cell.join_fds() == ()
    box.release("uep.x")
