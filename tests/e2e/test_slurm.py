"""User endpoints whose workers are Slurm jobs: the shipped Slurm template, end to end.

Real everything: the single-node cluster that ``packaging/dev/ensure-slurm.sh``
brings up (``make test`` runs it), the service on port 5000, a root manager
started with ``compute-endpoint start`` whose template and schema are the
shipped ``templates/examples/slurm`` ones, a local account made here, and
the official SDK as the researcher's client. Each task must run inside a
Slurm job owned by the mapped account, and no job of that account may
outlive its user endpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.appliance import (
    local_accounts,
    run,
    running_manager,
    stop_manager,
    submit,
    user_endpoint_logs,
)
from tests.fixtures_service import REPO

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the Slurm tests create local users"),
    pytest.mark.slurm,
]

EXAMPLE = REPO / "templates" / "examples" / "slurm"
CLIENT = REPO / "tests" / "e2e" / "slurm_client.py"
STATUS = Path("/run/compute-agent-slurm.status")
# The dev cluster's partition that only group root may use: the schema lets it
# through, Slurm refuses it.
REFUSED_PARTITION = "staff"
IDLE = {"heartbeat_period": 5, "idle_heartbeats_soft": 3}


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = run("sinfo", "-h", "-N", "-o", "%T", timeout=20)
    return done.returncode == 0 and re.search(r"^(idle|mixed|allocated)", done.stdout, re.M)


@pytest.fixture(scope="module")
def cluster():
    """The dev cluster; skips only when ensure-slurm.sh said it could not bring one up."""
    if _slurm_answers():
        return
    if STATUS.exists():
        pytest.skip(STATUS.read_text().strip())
    pytest.fail("Slurm does not take jobs and ensure-slurm.sh left no reason; run `make slurm`")


def shipped_template(**top_level: int) -> str:
    """The shipped Slurm template with top-level keys replaced (heartbeat, idle limits)."""
    text = (EXAMPLE / "user_config_template.yaml.j2").read_text()
    for key, value in top_level.items():
        text, found = re.subn(rf"^{key}: .*$", f"{key}: {value}", text, flags=re.M)
        if not found:
            text += f"\n{key}: {value}\n"
    return text


def shipped_schema() -> dict:
    """The shipped schema, with one partition the site lists but Slurm refuses this user."""
    schema = json.loads((EXAMPLE / "user_config_schema.json").read_text())
    schema["properties"]["partition"]["enum"].append(REFUSED_PARTITION)
    return schema


@pytest.fixture(scope="module")
def slurm_manager(cluster, compute_service, tmp_path_factory):
    with local_accounts(1, "slurm") as (users, _group):
        routes = {"alice@uni.edu": users[0].pw_name}
        root = tmp_path_factory.mktemp("slurm-endpoints")
        template = shipped_template(**IDLE)
        with running_manager(compute_service, root, routes, template, shipped_schema()) as mgr:
            yield mgr


def researcher(mgr, tmp_path: Path, mode: str, options: dict, arg: str = "") -> dict:
    args = [mgr.id, mode, json.dumps(options)] + ([arg] if arg else [])
    return submit(mgr, "alice", CLIENT, *args, user_dir=tmp_path / "sdk")


def jobs_of(account: str) -> list[str]:
    done = run("squeue", "-h", "-u", account, "-o", "%i")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def job_state(job_id: str) -> str:
    """What slurmctld remembers of a job (for MinJobAge seconds after it ended)."""
    done = run("scontrol", "show", "job", job_id)
    found = re.search(r"JobState=(\S+)", done.stdout)
    return found.group(1) if found else f"unknown ({done.stderr.strip()})"


def wait_for(predicate, timeout_s: float, what: str, details=lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout_s} s\n{details()}")
        time.sleep(1)


def test_task_runs_in_a_slurm_job_of_the_mapped_account(slurm_manager, tmp_path):
    account = slurm_manager.users[0]
    options = {"partition": "long", "walltime": "00:07:00"}
    out = researcher(slurm_manager, tmp_path, "where", options)
    assert "result" in out, f"{out}\n{user_endpoint_logs(slurm_manager)}"
    seen = out["result"]
    assert (seen["user"], seen["uid"]) == (account.pw_name, account.pw_uid)
    assert seen["job_id"] and seen["job_id"].isdigit(), seen
    assert seen["partition"] == "long"
    # squeue, asked from inside the task: the job is this account's, on the
    # chosen partition, with the chosen walltime, and running.
    assert seen["squeue"] == f"{account.pw_name}|long|7:00|RUNNING", seen
    assert seen["job_id"] in jobs_of(account.pw_name)


def test_an_option_the_schema_refuses_reaches_the_sdk(slurm_manager, tmp_path):
    out = researcher(slurm_manager, tmp_path, "where", {"partition": "gpu"})
    assert "'gpu' is not one of ['debug', 'long', 'staff']" in out.get("error", ""), out
    out = researcher(slurm_manager, tmp_path, "where", {"walltime": "2 days"})
    assert "does not match" in out.get("error", ""), out


def test_a_partition_slurm_refuses_reaches_the_sdk(slurm_manager, tmp_path):
    started = time.monotonic()
    out = researcher(slurm_manager, tmp_path, "where", {"partition": REFUSED_PARTITION})
    error = out.get("error", "")
    assert "not permitted to use this partition" in error, f"{out}\n{slurm_manager.log()[-3000:]}"
    assert time.monotonic() - started < 120


def test_shell_function_runs_in_the_job(slurm_manager, tmp_path):
    account = slurm_manager.users[0]
    out = researcher(slurm_manager, tmp_path, "shell", {}, "echo job=$SLURM_JOB_ID as=$(id -un)")
    assert out.get("returncode") == 0, out
    assert re.fullmatch(rf"job=\d+ as={account.pw_name}\n?", out["stdout"]), out


@pytest.mark.parametrize(
    "launcher, rank, size",
    [("srun", "$SLURM_PROCID", "$SLURM_NTASKS"), ("mpiexec", "$PMI_RANK", "$PMI_SIZE")],
)
def test_mpi_function_returns_every_ranks_output(slurm_manager, tmp_path, launcher, rank, size):
    options = {"mpi": True, "mpi_launcher": launcher, "cores_per_node": 2}
    command = f"sh -c 'echo rank={rank} of {size} job=$SLURM_JOB_ID'"
    out = researcher(slurm_manager, tmp_path, "mpi", options, command)
    assert out.get("returncode") == 0, f"{out}\n{user_endpoint_logs(slurm_manager)}"
    lines = sorted(out["stdout"].splitlines())
    jobs = {re.fullmatch(r"rank=\d of 2 job=(\d+)", line).group(1) for line in lines}
    assert [line.split()[0] for line in lines] == ["rank=0", "rank=1"], out
    assert len(jobs) == 1, f"the ranks ran in different jobs: {out}"


def test_idle_shutdown_cancels_the_accounts_jobs(slurm_manager, tmp_path):
    account = slurm_manager.users[0].pw_name
    out = researcher(slurm_manager, tmp_path, "where", {"walltime": "00:09:00"})
    job = out["result"]["job_id"]
    assert job in jobs_of(account)
    # Idle after 3 heartbeats of 5 s; the job's own limit is 9 minutes away.
    wait_for(
        lambda: not jobs_of(account),
        90,
        f"{account}'s jobs were not cancelled after an idle shutdown",
        lambda: run("squeue", "-u", account).stdout + user_endpoint_logs(slurm_manager),
    )
    assert job_state(job) == "CANCELLED"


def test_endpoint_stop_cancels_the_accounts_jobs(cluster, compute_service, tmp_path):
    with local_accounts(1, "slstop") as (users, _group):
        account = users[0].pw_name
        routes = {"alice@uni.edu": account}
        template = shipped_template()  # the shipped idle limit: minutes away
        with running_manager(compute_service, tmp_path, routes, template, shipped_schema()) as mgr:
            out = researcher(mgr, tmp_path, "where", {})
            job = out["result"]["job_id"]
            assert job in jobs_of(account)
            stop_manager(mgr)
            assert mgr.process.returncode is not None
            # Cancelled before the manager ended, Slurm may list the job a moment
            # longer while its processes end (COMPLETING); then it says how it ended.
            wait_for(
                lambda: not jobs_of(account),
                30,
                "the cancelled job to leave the queue",
                lambda: run("squeue", "-u", account, "-t", "all").stdout,
            )
            assert job_state(job) == "CANCELLED"
