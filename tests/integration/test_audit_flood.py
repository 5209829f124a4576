"""One user endpoint flooding its audit pipe costs only itself, and children never get the pipe.

Real packet pipes and a real log file; the budget's clock is a fake, so the
numbers are exact.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from mep.monitor import audit
from mep.monitor.audit import AuditLog
from uep.launch import keep_to_myself
from uep.payload import LaunchPayload


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def _flood(fd: int, stop: threading.Event) -> None:
    record = b"fid=x tid=y bid= FLOOD " + b"z" * 3000
    while not stop.is_set():
        try:
            os.write(fd, record)
        except BlockingIOError:
            stop.wait(0.001)
        except OSError:
            return


def test_a_flood_is_held_to_its_budget_and_another_users_records_all_get_through(tmp_path):
    clock = Clock()
    log = AuditLog(tmp_path / "audit.log", clock)
    flood_r, flood_w = log.open_pipe()
    quiet_r, quiet_w = log.open_pipe()
    log.watch(flood_r, 5001, 11, "flooder")
    log.watch(quiet_r, 5002, 12, "quiet")
    os.set_blocking(flood_w, False)
    stop = threading.Event()
    flooder = threading.Thread(target=_flood, args=(flood_w, stop))
    flooder.start()
    try:
        for second in range(10):
            os.write(quiet_w, f"fid=q tid={second} bid= EXEC_END".encode())
            for _ in range(20):  # the monitor's loop ticks many times a second
                log.drain()
            clock.now += 1.0
    finally:
        stop.set()
        flooder.join(5)
        for fd in (flood_w, quiet_w):
            os.close(fd)
        log.close()
    lines = (tmp_path / "audit.log").read_text().splitlines()
    quiet = [line for line in lines if "uep=quiet" in line]
    flooded = sum(len(line) for line in lines if "uep=flooder" in line)
    assert [line.split("tid=")[1].split()[0] for line in quiet] == [str(n) for n in range(10)]
    assert flooded <= audit.BURST_BYTES + 10 * audit.RATE_BYTES + 64 * 1024


def test_one_drain_reads_a_bounded_number_of_records_of_one_pipe(tmp_path, monkeypatch):
    monkeypatch.setattr(audit, "PACKETS_PER_DRAIN", 4)  # a full packet pipe holds 16
    log = AuditLog(tmp_path / "audit.log", Clock())
    read_end, write_end = log.open_pipe()
    log.watch(read_end, 5001, 11, "busy")
    os.set_blocking(write_end, False)
    written = 0
    try:
        while True:
            os.write(write_end, b"fid=x tid=y bid= X")
            written += 1
    except BlockingIOError:
        pass
    log.drain()
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert written > audit.PACKETS_PER_DRAIN and len(lines) == audit.PACKETS_PER_DRAIN
    os.close(write_end)
    log.close()


def test_the_user_endpoints_descriptors_stay_out_of_what_it_starts():
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # how the monitor hands it over
    payload = LaunchPayload(config_text="", ep_info={}, audit_fd=write_end, note_fd=write_end)
    keep_to_myself(payload)
    child = subprocess.run(
        [sys.executable, "-c", f"import os; os.fstat({write_end})"],
        capture_output=True,
        text=True,
        close_fds=False,  # even a child that keeps every inheritable descriptor
        timeout=30,
    )
    assert child.returncode != 0 and "Bad file descriptor" in child.stderr
    os.close(read_end)
    os.close(write_end)
