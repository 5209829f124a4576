"""Our manager beside the official globus-compute-endpoint 4.19, on the same service.

Not a test: run as root from a checkout with ``make compare`` (or
``.venv/bin/python -m bench.compare --runs 3``). It starts our service on
localhost:5000 (the SDK's ``local`` environment) on PostgreSQL, a private
RabbitMQ vhost, and then, one after the other, our manager and the official
one, configured alike (:mod:`bench.compare_managers`). The researcher's side is
the official SDK (:mod:`bench.compare_client`), each identity a fresh local
account. Per manager:

1. memory: 10 identities each get a live user endpoint; PSS of each account's
   whole process tree and of the manager's root tree;
2. cold start: a new identity's submit -> first result, 5 times each for
   ProcessPoolEngine and for GlobusComputeEngine + LocalProvider; at the SDK,
   and at the service (the task's creation to its result being recorded: the
   SDK rounds the first up to its next 0.5 s result poll);
3. latency: 200 sequential no-op tasks; at the service (the task's creation
   to its result being recorded) and at the SDK;
4. throughput: 2,000 no-op tasks at once through one user endpoint with 2
   workers, as seconds per 1,000 tasks;
5. fan-out: 20 new identities submit at once; seconds until the last has its
   first result.

Then the service alone: 2,000 tasks at once through our manager with a
ThreadPoolEngine of 4 workers, on PostgreSQL and on SQLite. Every figure is
"lower is better"; the table shows ours, official, their ratio and the goal;
``bench/results/compare.json`` and ``compare.png`` hold the median of the runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import math
import os
import platform
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path

from bench import memory
from bench.compare_managers import MANAGERS, OFFICIAL, Running, sdk_env
from tests.fixtures_service import (
    PORT_LOCK,
    SDK_PORT,
    RunningService,
    private_schema,
    private_vhost,
)

RESULTS = Path(__file__).resolve().parent / "results"
COLD_START_TIMEOUT_S = 300
GCE = {}  # the template's default engine: GlobusComputeEngine + LocalProvider, 1 worker
PROCESS_POOL = {"engine": "ProcessPoolEngine"}
# metric -> (goal as a ratio or an absolute bound, unit, what it is)
METRICS = {
    "cold_start_process_pool_s": (1 / 3, "s", "cold start, ProcessPoolEngine (median of 5)"),
    "cold_start_gce_s": (1 / 3, "s", "cold start, GlobusComputeEngine (median of 5)"),
    "cold_start_process_pool_service_s": (
        1 / 3,
        "s",
        "cold start at the service, ProcessPoolEngine",
    ),
    "cold_start_gce_service_s": (1 / 3, "s", "cold start at the service, GlobusComputeEngine"),
    "latency_service_p50_ms": (1 / 2, "ms", "latency at the service, p50"),
    "latency_service_p95_ms": (None, "ms", "latency at the service, p95"),
    "latency_sdk_p50_ms": (None, "ms", "SDK round trip, p50"),
    "latency_sdk_p95_ms": (None, "ms", "SDK round trip, p95"),
    "s_per_1000_tasks": (1 / 2, "s", "2,000 tasks at once, 2 workers, s per 1,000"),
    "pss_per_user_mib": (1 / 3, "MiB", "PSS of one user endpoint tree (median of 10)"),
    "manager_pss_mib": (1 / 2, "MiB", "PSS of the manager (10 live user endpoints)"),
    "fanout_s": (1 / 2, "s", "20 identities at once: until the last first result"),
}
SERVICE_METRICS = {
    "service_postgresql_s_per_1000": (1.0, "s", "service alone, PostgreSQL: s per 1,000"),
    "service_sqlite_s_per_1000": (1.0, "s", "service alone, SQLite: s per 1,000"),
}


def say(text: str) -> None:
    print(f"[compare] {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def port_5000():
    """The SDK's ``local`` environment is fixed at localhost:5000: wait for the port."""
    with open(PORT_LOCK, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def port_is_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def service(db_url: str, amqp_url: str, work: Path):
    deadline = time.monotonic() + 300
    while port_is_taken(SDK_PORT):  # e.g. a demo left running with KEEP=1
        if time.monotonic() > deadline:
            raise SystemExit(f"port {SDK_PORT} stays taken by another process; stop it first")
        time.sleep(1)
    svc = RunningService(SDK_PORT, db_url, amqp_url, work / f"service-{uuid.uuid4().hex[:6]}.log")
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@dataclasses.dataclass
class Bench:
    """One service, the identities made on it, and where things are written."""

    svc: RunningService
    work: Path
    accounts: list[str] = dataclasses.field(default_factory=list)

    def identity(self) -> tuple[dict, pwd.struct_passwd]:
        """A fresh local account and a client for ``<account>@bench.local``.

        The client is written straight into the service's database, as
        ``compute-service client add`` would, without its second of start-up.
        """
        from service import auth, store

        name = f"cab-{uuid.uuid4().hex[:10]}"
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, timeout=60)
        self.accounts.append(name)
        sessions = store.open_database(self.svc.db_url)
        try:
            with sessions.begin() as s:
                client, secret = auth.add_client(s, f"{name}@bench.local", [], None)
                doc = {"client_id": client.client_id, "client_secret": secret}
        finally:
            store.dispose(sessions)
        return doc, pwd.getpwnam(name)

    def retire(self, names: list[str]) -> None:
        """Stop an account's user endpoint tree (SIGTERM, then SIGKILL)."""
        for signal_name, wait_s in (("TERM", 20), ("KILL", 5)):
            for name in names:
                subprocess.run(["pkill", f"-{signal_name}", "-u", name], check=False)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if not any(memory.pids_of_uid(pwd.getpwnam(n).pw_uid) for n in names):
                    return
                time.sleep(0.2)

    def remove_accounts(self) -> None:
        self.retire(self.accounts)
        for name in self.accounts:
            subprocess.run(["userdel", "-r", name], capture_output=True, check=False)
        self.accounts.clear()

    def client(self, client: dict, *args: str) -> subprocess.Popen:
        with open(self.work / "clients.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "bench.compare_client", *args],
                env=sdk_env(self.svc.url, client, self.work / "sdk" / client["client_id"]),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )

    def answer(self, process: subprocess.Popen, timeout: float = 900) -> dict:
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise RuntimeError(f"a researcher got no answer within {timeout:.0f} s") from None
        if process.returncode != 0:
            tail = (self.work / "clients.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"a researcher's script failed:\n{tail}")
        return json.loads(out.strip().splitlines()[-1])


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def service_latency_ms(db_url: str, task_ids: list[str]) -> list[float]:
    """Creation -> result recorded, as the service's own database has it.

    The SDK hands a result to the researcher only at its result watcher's next
    poll (every 0.5 s, ``_ResultWatcher.poll_period_s``), so a figure taken at
    the SDK is rounded up to that grid; this one is not.
    """
    from service import schema, store

    sessions = store.open_database(db_url)
    with sessions() as s:
        rows = s.query(schema.Task.created_t, schema.Task.completion_t).filter(
            schema.Task.id.in_(task_ids)
        )
        latencies = [(done - created) * 1000 for created, done in rows if done]
    store.dispose(sessions)
    if len(latencies) != len(task_ids):
        raise RuntimeError("some latency tasks have no completion time at the service")
    return latencies


def measure_memory(bench: Bench, mgr: Running, count: int = 10) -> dict:
    people = [bench.identity() for _ in range(count)]
    runs = [bench.client(c, "first", mgr.endpoint_id, json.dumps(GCE)) for c, _ in people]
    for process in runs:
        bench.answer(process)
    time.sleep(10)  # let each tree settle after its first task
    per_user = [memory.tree_pss_mib(memory.pids_of_uid(p.pw_uid)) for _, p in people]
    counts = [len(memory.pids_of_uid(p.pw_uid)) for _, p in people]
    users = {pwd.getpwnam(name).pw_uid for name in bench.accounts}
    manager = memory.tree_pss_mib(memory.manager_tree(mgr.pid, users))
    bench.retire([p.pw_name for _, p in people])
    return {
        "pss_per_user_mib": statistics.median(per_user),
        "manager_pss_mib": manager,
        "processes_per_user": statistics.median(counts),
    }


def measure_cold_starts(bench: Bench, mgr: Running, config: dict, count: int) -> dict:
    """Median seconds of ``count`` cold starts at the SDK and at the service, and
    how many never answered (their user endpoints' logs are kept in the work
    directory)."""
    seconds, task_ids, failures = [], [], 0
    for _ in range(count):
        client, person = bench.identity()
        started = bench.client(client, "first", mgr.endpoint_id, json.dumps(config))
        try:
            answer = bench.answer(started, timeout=COLD_START_TIMEOUT_S)
            seconds.append(answer["seconds"])
            task_ids.append(answer["task_id"])
        except RuntimeError as e:
            failures += 1
            kept = bench.work / f"failed-{mgr.name}-{person.pw_name}"
            shutil.copytree(person.pw_dir, kept, ignore_dangling_symlinks=True, symlinks=True)
            say(f"{mgr.name}: a cold start failed ({e}); its account's files: {kept}")
        bench.retire([person.pw_name])
    at_service = service_latency_ms(bench.svc.db_url, task_ids) if task_ids else []
    return {
        "median": statistics.median(seconds) if seconds else math.inf,
        "at_service": statistics.median(at_service) / 1000 if at_service else math.inf,
        "failures": failures,
    }


def measure_latency(bench: Bench, mgr: Running, count: int = 200) -> dict:
    client, person = bench.identity()
    out = bench.answer(bench.client(client, "sequential", mgr.endpoint_id, "{}", str(count)))
    bench.retire([person.pw_name])
    at_service = service_latency_ms(bench.svc.db_url, out["task_ids"])
    at_sdk = [s * 1000 for s in out["round_trips"]]
    return {
        "latency_service_p50_ms": percentile(at_service, 50),
        "latency_service_p95_ms": percentile(at_service, 95),
        "latency_sdk_p50_ms": percentile(at_sdk, 50),
        "latency_sdk_p95_ms": percentile(at_sdk, 95),
    }


def measure_burst(bench: Bench, mgr: Running, config: dict, count: int = 2000) -> float:
    client, person = bench.identity()
    out = bench.answer(
        bench.client(client, "burst", mgr.endpoint_id, json.dumps(config), str(count))
    )
    bench.retire([person.pw_name])
    return out["seconds"] * 1000 / out["tasks"]


def measure_fanout(bench: Bench, mgr: Running, count: int = 20) -> float:
    people = [bench.identity() for _ in range(count)]
    barrier = bench.work / f"go-{uuid.uuid4().hex[:6]}"
    runs = [bench.client(c, "first", mgr.endpoint_id, "{}", str(barrier)) for c, _ in people]
    deadline = time.monotonic() + 120
    while len(list(bench.work.glob(f"{barrier.name}.ready.*"))) < count:
        if time.monotonic() > deadline or any(r.poll() is not None for r in runs):
            raise RuntimeError("the fan-out's researchers did not all get ready")
        time.sleep(0.1)
    released = time.time()
    barrier.touch()
    last = max(bench.answer(r)["done"] for r in runs)
    bench.retire([p.pw_name for _, p in people])
    return last - released


def measure_side(bench: Bench, mgr: Running, cold_starts: int) -> dict:
    say(f"{mgr.name}: memory of 10 live user endpoints")
    figures = measure_memory(bench, mgr)
    say(f"{mgr.name}: cold starts")
    for name, config in (("cold_start_process_pool", PROCESS_POOL), ("cold_start_gce", GCE)):
        cold = measure_cold_starts(bench, mgr, config, cold_starts)
        figures[f"{name}_s"], figures[f"{name}_s_failures"] = cold["median"], cold["failures"]
        figures[f"{name}_service_s"] = cold["at_service"]
    say(f"{mgr.name}: latency")
    figures.update(measure_latency(bench, mgr))
    say(f"{mgr.name}: throughput")
    figures["s_per_1000_tasks"] = measure_burst(bench, mgr, {"workers": 2})
    say(f"{mgr.name}: fan-out")
    figures["fanout_s"] = measure_fanout(bench, mgr)
    return figures


def service_alone(bench: Bench, mgr: Running) -> float:
    return measure_burst(bench, mgr, {"engine": "ThreadPoolEngine", "workers": 4})


def run_once(work: Path, cold_starts: int, sides: tuple[str, ...]) -> dict:
    """One full comparison; returns {side: {metric: value}}."""
    figures: dict[str, dict] = {side: {} for side in sides}
    with contextlib.ExitStack() as stack:
        amqp_url = stack.enter_context(private_vhost("bench"))
        stack.enter_context(port_5000())
        for db_kind in ("postgresql", "sqlite"):
            if db_kind == "postgresql":
                db_url = stack.enter_context(private_schema())
            else:
                db_url = f"sqlite:///{work / f'service-{uuid.uuid4().hex[:6]}.db'}"
            with service(db_url, amqp_url, work) as svc:
                bench = Bench(svc, work)
                admin = svc.add_client("admin@site.org")
                try:
                    for side in sides if db_kind == "postgresql" else ("ours",):
                        root = work / f"{side}-{db_kind}-{uuid.uuid4().hex[:6]}"
                        with MANAGERS[side](root, svc.url, admin) as mgr:
                            if db_kind == "postgresql":
                                figures[side].update(measure_side(bench, mgr, cold_starts))
                            if side == "ours":
                                say(f"service alone on {db_kind}")
                                figures["ours"][f"service_{db_kind}_s_per_1000"] = service_alone(
                                    bench, mgr
                                )
                finally:
                    bench.remove_accounts()
    return figures


def machine() -> dict:
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions() -> dict:
    official = subprocess.run(
        [
            str(OFFICIAL.parent / "python"),
            "-c",
            "import globus_compute_endpoint as e, parsl; print(e.__version__, parsl.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return {
        "compute-agent": version("compute-agent"),
        "parsl (ours)": version("parsl"),
        "globus-compute-sdk (client)": version("globus-compute-sdk"),
        "globus-compute-endpoint (official)": official[0] if official else "missing",
        "parsl (official)": official[1] if len(official) > 1 else "missing",
    }


def summarize(runs: list[dict]) -> dict:
    """Median over the runs of each figure, with ratio and goal."""
    metrics = {}
    for name, (goal, unit, label) in {**METRICS, **SERVICE_METRICS}.items():
        ours = statistics.median(r["ours"][name] for r in runs if name in r["ours"])
        entry = {"label": label, "unit": unit, "ours": round(ours, 3)}
        if name in SERVICE_METRICS:
            entry.update(official=None, ratio=None, goal=f"<= {goal} {unit}", met=ours <= goal)
        else:
            theirs = [r["official"][name] for r in runs if "official" in r]
            official = statistics.median(theirs) if theirs else None  # --sides ours
            ratio = ours / official if official else None
            entry.update(
                official=None if official is None else round(official, 3),
                ratio=None if ratio is None else round(ratio, 3),
                goal=f"<= {goal:.2f}" if goal else None,
                met=(ratio <= goal) if goal and ratio is not None else None,
            )
        failed = {
            side: sum(r[side].get(f"{name}_failures", 0) for r in runs if side in r)
            for side in ("ours", "official")
        }
        if any(failed.values()):
            entry["failures"] = failed
        metrics[name] = entry
    return metrics


def table(metrics: dict) -> str:
    rows = [f"{'figure':<52} {'ours':>10} {'official':>10} {'ratio':>7} {'goal':>14}  met"]
    for m in metrics.values():
        official = "" if m["official"] is None else f"{m['official']:.3g}"
        ratio = "" if m["ratio"] is None else f"{m['ratio']:.2f}"
        met = {True: "yes", False: "NO", None: ""}[m["met"]]
        if m.get("failures"):
            met += f"  (never answered: ours {m['failures']['ours']}, official {m['failures']['official']})"
        rows.append(
            f"{m['label'] + ' (' + m['unit'] + ')':<52} {m['ours']:>10.3g} {official:>10} "
            f"{ratio:>7} {m['goal'] or '':>14}  {met}"
        )
    return "\n".join(rows)


def chart(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(m["label"], m["ratio"], m["goal"]) for m in doc["metrics"].values() if m["ratio"]]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.8))
    labels = [r[0] for r in rows]
    ratios = [r[1] for r in rows]
    colors = ["#2a9d8f" if r <= 1 else "#e76f51" for r in ratios]
    ax.barh(labels, ratios, color=colors)
    for i, (_, _, goal) in enumerate(rows):
        if goal:
            ax.plot([float(goal.split()[-1])] * 2, [i - 0.4, i + 0.4], color="black", lw=2)
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("ours / official (lower is better; black tick: goal)")
    m, v = doc["machine"], doc["versions"]
    ax.set_title(
        f"compute-agent {v['compute-agent']} vs globus-compute-endpoint "
        f"{v['globus-compute-endpoint (official)']}  |  {m['cores']} cores, "
        f"{m['memory_gib']} GiB, median of {doc['runs']} runs",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--sides", default="ours,official")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the managers map identities to local accounts")
    if importlib.util.find_spec("matplotlib") is None:  # asked now, not after the runs
        raise SystemExit(
            "the chart of ratios needs matplotlib, which this environment lacks:"
            " pip install '.[bench]' (make compare does)"
        )
    sides = tuple(args.sides.split(","))
    runs = []
    work = Path(tempfile.mkdtemp(prefix="ca-compare-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    for i in range(args.runs):
        say(f"run {i + 1} of {args.runs}; logs in {work}")
        runs.append(run_once(work, args.cold_starts, sides))
        say(json.dumps(runs[-1]))
    if not any(work.glob("failed-*")):
        shutil.rmtree(work)
    doc = {
        "machine": machine(),
        "versions": versions(),
        "runs": args.runs,
        "metrics": summarize(runs),
        "raw": runs,
    }
    print(table(doc["metrics"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    chart(doc, args.out.with_suffix(".png"))
    say(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
