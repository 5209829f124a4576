"""User endpoint benchmark: cold start, no-op throughput and resting memory per engine.

Not a test. Runs the real ``_start-user-endpoint`` process against the local
RabbitMQ (a throwaway vhost), with tasks packed by the official SDK, and prints
a table; the figures are also written to ``bench/results/uep_bench.json``.

- cold start: a task is already waiting in the queue; the clock runs from
  launching the process (payload on stdin) to receiving its result.
- throughput: N no-op tasks published back to back, from the first publish to
  the last result received (the whole path: broker, journal, engine, result
  store, publish with confirms).
- RSS: resident memory of the endpoint process itself once idle.

Usage: python -m bench.uep_bench [--tasks 5000] [--engines ThreadPoolEngine,...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pika

from tests.integration.test_uep_harness import Endpoint, Service, sdk_task
from wire.amqp import connect

RESULTS = Path(__file__).resolve().parent / "results" / "uep_bench.json"
CONFIGS = {
    "ThreadPoolEngine": "engine:\n  type: ThreadPoolEngine\n  max_workers: 2\n",
    "ProcessPoolEngine": "engine:\n  type: ProcessPoolEngine\n  max_workers: 2\n",
    "GlobusComputeEngine": (
        "engine:\n  type: GlobusComputeEngine\n  max_workers_per_node: 2\n"
        "  job_status_kwargs: {strategy_period: 5}\n"
        "  provider:\n    type: LocalProvider\n    init_blocks: 1\n    min_blocks: 0\n"
        "    max_blocks: 1\n"
    ),
}


def noop():
    return None


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


class Collector:
    """Counts results arriving on the service's result queue."""

    def __init__(self, service: Service) -> None:
        self.conn = connect(service.url, client_name="uep-bench")
        self.ch = self.conn.channel()
        self.queue = service.result_queue

    def wait(self, count: int, timeout: float) -> float:
        """Block until ``count`` results arrived; the time of the last one."""
        seen, deadline = 0, time.monotonic() + timeout
        for method, _props, _body in self.ch.consume(
            self.queue, auto_ack=True, inactivity_timeout=0.5
        ):
            if method is not None:
                seen += 1
                if seen >= count:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {seen} of {count} results in {timeout}s")
        self.ch.cancel()
        return time.monotonic()

    def close(self) -> None:
        self.conn.close()


def publish_many(service: Service, bodies: list[tuple[str, bytes]]) -> None:
    conn = connect(service.url, client_name="uep-bench-publisher")
    ch = conn.channel()
    for task_id, body in bodies:
        headers = {"task_uuid": task_id, "function_uuid": service.function_id}
        ch.basic_publish("tasks", service.task_queue, body, pika.BasicProperties(headers=headers))
    conn.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_engine(vhost: str, engine: str, tasks: int) -> dict:
    service = Service(vhost)
    home = Path(tempfile.mkdtemp(prefix="uep-bench-"))
    collector = Collector(service)
    try:
        publish_many(service, [sdk_task(noop)])
        started = time.monotonic()
        ep = Endpoint(home, service, CONFIGS[engine], name=f"bench-{uuid.uuid4().hex[:6]}")
        try:
            cold = collector.wait(1, 120) - started
            time.sleep(2.0)
            rss = rss_mb(ep.proc.pid)
            warm = [sdk_task(noop) for _ in range(200)]
            publish_many(service, warm)
            collector.wait(len(warm), 120)
            bodies = [sdk_task(noop) for _ in range(tasks)]
            begin = time.monotonic()
            publish_many(service, bodies)
            rate = tasks / (collector.wait(tasks, 600) - begin)
        finally:
            ep.stop()
        return {"engine": engine, "cold_start_s": cold, "tasks_per_s": rate, "rss_mb": rss}
    finally:
        collector.close()
        service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engines", default=",".join(CONFIGS))
    args = parser.parse_args()
    vhost = f"uep-bench-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rows = []
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        for engine in args.engines.split(","):
            runs = [bench_engine(vhost, engine, args.tasks) for _ in range(args.runs)]
            rows.append(
                {
                    "engine": engine,
                    "runs": runs,
                    "cold_start_s": statistics.median(r["cold_start_s"] for r in runs),
                    "tasks_per_s": statistics.median(r["tasks_per_s"] for r in runs),
                    "rss_mb": statistics.median(r["rss_mb"] for r in runs),
                }
            )
    finally:
        rabbitmqctl("delete_vhost", vhost)
    print(f"{'engine':<22}{'cold start (s)':>16}{'no-op tasks/s':>16}{'UEP RSS (MB)':>14}")
    for row in rows:
        print(
            f"{row['engine']:<22}{row['cold_start_s']:>16.3f}"
            f"{row['tasks_per_s']:>16.0f}{row['rss_mb']:>14.1f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "host": {"python": platform.python_version(), "machine": platform.machine()},
                "tasks": args.tasks,
                "median_of_runs": args.runs,
                "engines": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
