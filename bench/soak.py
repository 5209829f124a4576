"""``make soak``: load one manager for a while and look for anything that piles up.

Not part of ``make test`` (it takes several minutes and 2-3 GB of memory):

1. **crowd**: 50 identities, each its own local account, each submitting 20
   tasks at once with the official SDK (50 ``Executor``s in parallel), through
   one manager: every task must come back as its own account's;
2. **cycles**: user endpoint start/stop cycles (each a new configuration, one
   task, then an idle stop), with the manager's memory (RSS), open descriptors,
   children and cgroups measured at the start and the end: they must stay flat.

Prints a table and writes ``bench/results/soak.json``.

    make soak            # CYCLES=1000 by default
    make soak CYCLES=200
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.e2e.appliance import client_env, local_accounts, manager_children, run, running_manager
from tests.fixtures_service import PORT_LOCK, SDK_PORT, RunningService, private_vhost
from wire import serializer

RESULTS = Path(__file__).with_name("results") / "soak.json"
TEMPLATE = """\
heartbeat_period: 5
idle_heartbeats_soft: {{ idle | default(1) }}
idle_heartbeats_hard: 100
engine:
  type: ThreadPoolEngine
  max_workers: 4
"""
SCHEMA = {"type": "object"}
CROWD_CODE = """
import json, os, sys
from globus_compute_sdk import Executor

def who(n):
    import os
    return os.getuid(), n

with Executor(endpoint_id=sys.argv[1], user_endpoint_config={"idle": 3}) as ex:
    futures = [ex.submit(who, n) for n in range(int(sys.argv[2]))]
    print(json.dumps([f.result(timeout=300) for f in futures]))
"""
CONFIG = "limits:\n  max_user_endpoints_per_user: 100\n  max_user_endpoints: 1000\n"


def say(text: str) -> None:
    print(f"[soak] {text}", flush=True)


def manager_facts(mgr) -> dict:
    """The manager's RSS, open descriptors, children and user endpoint cgroups."""
    pid = mgr.process.pid
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    base = Path(f"/sys/fs/cgroup/unified/compute-agent.{mgr.id}")
    cells = sum(1 for path in base.glob("*/*") if path.is_dir()) if base.exists() else 0
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "open_fds": len(os.listdir(f"/proc/{pid}/fd")),
        "children": len(manager_children(pid)),
        "cgroups": cells,
    }


def crowd(mgr, tmp: Path, identities: int, tasks: int) -> dict:
    script = tmp / "crowd.py"
    script.write_text(CROWD_CODE)

    def one(n: int) -> tuple[int, list]:
        who = f"user{n}"
        env = client_env(mgr.service, mgr.clients[who], tmp / f"sdk-{n}")
        try:
            done = run(sys.executable, str(script), mgr.id, str(tasks), env=env, timeout=600)
        except subprocess.TimeoutExpired:
            return n, [("error", "no answer within 600 s")]
        if done.returncode != 0:
            return n, [("error", done.stderr[-500:])]
        return n, json.loads(done.stdout.strip().splitlines()[-1])

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(identities) as pool:
        outcomes = dict(pool.map(one, range(identities)))
    seconds = time.monotonic() - started
    for n, answers in outcomes.items():
        if answers and answers[0][0] == "error":
            say(f"identity {n}: {answers[0][1][-300:]}")
    right = sum(
        1
        for n, answers in outcomes.items()
        for answer in answers
        if isinstance(answer, list) and answer[0] == mgr.users[n].pw_uid
    )
    return {"identities": identities, "tasks": identities * tasks, "right": right, "s": seconds}


def cycles(mgr, count: int, parallel: int) -> dict:
    """``count`` start/stop cycles through the REST API, ``parallel`` user endpoints at a time."""
    code = serializer.pack_buffers([serializer.serialize(len)])
    payload = serializer.pack_buffers([serializer.serialize(("x",)), serializer.serialize({})])
    apis = []
    for n in range(parallel):
        token = mgr.service.token(mgr.clients[f"user{n}"])
        api = httpx.Client(base_url=mgr.service.url, headers={"Authorization": f"Bearer {token}"})
        fid = api.post("/v3/functions", json={"function_name": "len", "function_code": code})
        apis.append((api, fid.json()["function_uuid"]))
    before = manager_facts(mgr)
    started, done, failed = time.monotonic(), 0, 0
    while done < count:
        wave = min(parallel, count - done)
        task_ids = []
        for n in range(wave):
            api, fid = apis[n]
            body = {"tasks": {fid: [payload]}, "user_endpoint_config": {"cycle": done + n}}
            answer = api.post(f"/v3/endpoints/{mgr.id}/submit", json=body).json()
            task_ids.append((api, answer["tasks"][fid][0]))
        deadline = time.monotonic() + 120
        for api, task_id in task_ids:
            while api.get(f"/v2/tasks/{task_id}").json()["status"] not in ("success", "failed"):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            failed += api.get(f"/v2/tasks/{task_id}").json()["status"] != "success"
        while manager_children(mgr.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)  # the wave's user endpoints stop when idle
        done += wave
        if done % (parallel * 10) == 0:
            say(f"{done} cycles, manager {manager_facts(mgr)}")
    after = manager_facts(mgr)
    for api, _fid in apis:
        api.close()
    return {
        "cycles": count,
        "failed_tasks": failed,
        "s": time.monotonic() - started,
        "before": before,
        "after": after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=20)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ca-soak-")))
        os.chmod(tmp, 0o755)
        lock = stack.enter_context(open(PORT_LOCK, "w"))
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        amqp = stack.enter_context(private_vhost("soak"))
        service = RunningService(SDK_PORT, f"sqlite:///{tmp / 'service.db'}", amqp, tmp / "svc.log")
        service.start()
        stack.callback(service.stop)
        users, _group = stack.enter_context(local_accounts(args.identities, "soak"))
        routes = {f"user{n}@uni.edu": u.pw_name for n, u in enumerate(users)}
        mgr = stack.enter_context(
            running_manager(service, tmp, routes, TEMPLATE, SCHEMA, config=CONFIG)
        )
        say(f"manager {mgr.id}, {len(users)} local accounts")
        first = crowd(mgr, tmp, args.identities, args.tasks)
        say(f"crowd: {first}")
        if first["right"] < first["tasks"]:
            say("manager log:\n" + mgr.log()[-4000:])
        deadline = time.monotonic() + 300
        while manager_children(mgr.process.pid) and time.monotonic() < deadline:
            time.sleep(1)  # the crowd's user endpoints stop when idle
        second = cycles(mgr, args.cycles, min(args.parallel, args.identities))
        say(f"cycles: {second}")
    report(first, second)


def report(first: dict, second: dict) -> None:
    before, after = second["before"], second["after"]
    rows = [
        (
            "crowd: identities x tasks",
            f"{first['identities']} x {first['tasks'] // first['identities']}",
        ),
        ("crowd: tasks answered as their own account", f"{first['right']} of {first['tasks']}"),
        ("crowd: seconds", f"{first['s']:.1f}"),
        ("cycles: user endpoint start/stop", str(second["cycles"])),
        ("cycles: tasks that failed", str(second["failed_tasks"])),
        ("cycles: seconds", f"{second['s']:.0f}"),
        ("manager RSS KiB, start -> end", f"{before['rss_kib']} -> {after['rss_kib']}"),
        ("manager open fds, start -> end", f"{before['open_fds']} -> {after['open_fds']}"),
        ("manager children, start -> end", f"{before['children']} -> {after['children']}"),
        ("user endpoint cgroups, start -> end", f"{before['cgroups']} -> {after['cgroups']}"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.parent.mkdir(exist_ok=True)
    doc = {
        "command": "make soak",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "crowd": first,
        "cycles": second,
    }
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
