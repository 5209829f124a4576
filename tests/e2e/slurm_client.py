"""Researcher code for the Slurm e2e tests: unmodified official SDK, env-configured.

``slurm_client.py ENDPOINT_ID MODE OPTIONS_JSON [ARG]`` prints one JSON
document. ``OPTIONS_JSON`` is the ``user_endpoint_config``; modes:

- ``where``: a Python function reports its account and Slurm job, and what
  ``squeue`` says about that job from inside it;
- ``shell``: a ShellFunction running ARG;
- ``mpi``: an MPIFunction running ARG with resource_specification
  ``{"num_nodes": 1, "ranks_per_node": 2}``.

A task that fails comes back as the text of its exception, as a researcher
would read it.
"""

import json
import sys

from globus_compute_sdk import Executor, MPIFunction, ShellFunction


def where():
    import getpass
    import os
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    seen = subprocess.run(
        ["squeue", "-h", "-j", str(job), "-o", "%u|%P|%l|%T"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "user": getpass.getuser(),
        "uid": os.getuid(),
        "job_id": job,
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "squeue": seen,
    }


def outcome(future, timeout_s: float = 150):
    try:
        result = future.result(timeout=timeout_s)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    if hasattr(result, "stdout"):
        return {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
    return {"result": result}


def main(endpoint_id: str, mode: str, options: dict, arg: str = "") -> dict:
    with Executor(endpoint_id=endpoint_id, user_endpoint_config=options) as ex:
        if mode == "where":
            return outcome(ex.submit(where))
        if mode == "shell":
            return outcome(ex.submit(ShellFunction(arg)))
        if mode == "mpi":
            ex.resource_specification = {"num_nodes": 1, "ranks_per_node": 2}
            return outcome(ex.submit(MPIFunction(arg)))
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), *sys.argv[4:])))
