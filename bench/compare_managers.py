"""The two multi-user endpoint managers ``bench.compare`` puts side by side.

Both are configured the same way: as root, with the same identity mapping
(``<account>@bench.local`` runs as ``<account>``), the same Jinja template and
schema, registered with the same service by the same admin client through the
same environment variables. Only the program differs: ours
(``python -m mep.cli``) or the official ``globus-compute-endpoint``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures_service import REPO

OFFICIAL = Path(
    os.environ.get(
        "COMPUTE_AGENT_OFFICIAL_ENDPOINT",
        "/var/tmp/compute-agent/official-endpoint-4.19/bin/globus-compute-endpoint",
    )
)
MAPPING = [
    {
        "DATA_TYPE": "expression_identity_mapping#1.0.0",
        "mappings": [{"source": "{username}", "match": "(.*)@bench\\.local", "output": "{0}"}],
    }
]
# One template for both managers; only the engine and its worker count vary. Both
# managers hand user strings to the template JSON-quoted, so they compare as '"x"'.
TEMPLATE = """\
{%- set kind = engine | default("GlobusComputeEngine") %}
heartbeat_period: 10
idle_heartbeats_soft: 60
idle_heartbeats_hard: 5760
engine:
{%- if kind == '"ProcessPoolEngine"' %}
  type: ProcessPoolEngine
  max_workers: {{ workers | default(1) }}
{%- elif kind == '"ThreadPoolEngine"' %}
  type: ThreadPoolEngine
  max_workers: {{ workers | default(1) }}
{%- else %}
  type: GlobusComputeEngine
  max_workers_per_node: {{ workers | default(1) }}
  provider:
    type: LocalProvider
    init_blocks: 1
    min_blocks: 0
    max_blocks: 1
{%- endif %}
"""
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "engine": {"enum": ["GlobusComputeEngine", "ProcessPoolEngine", "ThreadPoolEngine"]},
        "workers": {"type": "integer", "minimum": 1, "maximum": 8},
    },
    "additionalProperties": False,
}


@dataclasses.dataclass
class Running:
    """A started manager: its endpoint id and the pid whose root tree is the manager."""

    name: str
    endpoint_id: str
    pid: int


def sdk_env(service_url: str, client: dict, user_dir: Path | None = None) -> dict:
    """What a researcher's (or the admin's) official-SDK process reads.

    ``user_dir`` gives the process its own SDK directory, as each researcher
    has in their own home: SDK processes started at once that share one make
    its token database together and can find it without its table.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLOBUS_", "PYTHON"))}
    env.update(
        PYTHONPATH=str(REPO),
        GLOBUS_SDK_ENVIRONMENT="local",
        GLOBUS_SDK_SERVICE_URL_AUTH=f"{service_url}/",
        GLOBUS_COMPUTE_CLIENT_ID=client["client_id"],
        GLOBUS_COMPUTE_CLIENT_SECRET=client["client_secret"],
    )
    if user_dir is not None:
        env["GLOBUS_COMPUTE_USER_DIR"] = str(user_dir)
    return env


def _write_inputs(root: Path) -> tuple[Path, Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = (root / "mapping.json", root / "template.yaml.j2", root / "schema.json")
    files[0].write_text(json.dumps(MAPPING))
    files[1].write_text(TEMPLATE)
    files[2].write_text(json.dumps(SCHEMA))
    return files


def _run(args: list[str], env: dict) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def _stop(process: subprocess.Popen, group: bool) -> None:
    """SIGTERM (to the process group if ``group``), SIGKILL to the group if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@contextlib.contextmanager
def ours(root: Path, service_url: str, admin: dict):
    mapping, template, schema = _write_inputs(root)
    env = sdk_env(service_url, admin)
    cli = [sys.executable, "-m", "mep.cli"]
    _run(
        [
            *cli,
            "configure",
            "ep",
            "--multi-user",
            "--contact-email",
            "admin@site.org",
            "--id-mapping-config",
            str(mapping),
            "--config-dir",
            str(root),
        ],
        env,
    )
    (root / "ep/user_config_template.yaml.j2").write_text(template.read_text())
    (root / "ep/user_config_schema.json").write_text(schema.read_text())
    with open(root / "manager.log", "ab") as log:
        process = subprocess.Popen(
            [*cli, "start", "ep", "--config-dir", str(root)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
    try:
        endpoint_id = process.stdout.readline().strip()
        if process.poll() is not None or not endpoint_id:
            tail = (root / "manager.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"our manager did not start:\n{tail}")
        yield Running("ours", endpoint_id, process.pid)
    finally:
        _stop(process, group=False)


@contextlib.contextmanager
def official(root: Path, service_url: str, admin: dict):
    mapping, template, schema = _write_inputs(root)
    home = root / "home"
    home.mkdir(exist_ok=True)
    env = dict(
        sdk_env(service_url, admin),
        HOME=str(home),
        GLOBUS_COMPUTE_USER_DIR=str(home / ".globus_compute"),
        PATH=f"{OFFICIAL.parent}:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    del env["PYTHONPATH"]
    _run(
        [
            str(OFFICIAL),
            "configure",
            "ep",
            "--multi-user",
            "true",
            "--contact-email",
            "admin@site.org",
            "--id-mapping-config",
            str(mapping),
            "--template-config",
            str(template),
            "--schema-config",
            str(schema),
        ],
        env,
    )
    with open(root / "manager.log", "ab") as log:
        process = subprocess.Popen(
            [str(OFFICIAL), "start", "ep"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        registered = home / ".globus_compute/ep/endpoint.json"
        deadline = time.monotonic() + 90
        while not registered.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (root / "manager.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the official manager did not register:\n{tail}")
            time.sleep(0.2)
        yield Running("official", json.loads(registered.read_text())["endpoint_id"], process.pid)
    finally:
        _stop(process, group=True)


MANAGERS = {"ours": ours, "official": official}
