"""The shipped PBS Pro example (Polaris-style) as the batch script it would submit.

PBS itself cannot run here. Everything short of it is real: the shipped
template and schema rendered with a researcher's options, the engine built
from that config and started (a real Parsl interchange), and a block
requested through Parsl's PBSProProvider. ``qsub``, ``qstat`` and ``qdel`` are
stand-ins on PATH that record what they were given; the test reads the
script the provider handed to ``qsub``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.unit.test_templates_examples import rendered, scheduler_example
from uep.engines import build_engine

OPTIONS = {
    "account": "alcf_training",
    "queue": "debug-scaling",
    "walltime": "00:45:00",
    "nodes_per_block": 2,
    "worker_init": "module load conda; conda activate /grand/env",
}
STAND_INS = {
    # qsub records its arguments and prints a PBS job id.
    "qsub": 'printf "%s\\n" "$@" > "$PBS_LOG/qsub.args"\necho 4242.polaris-pbs-01\n',
    "qstat": 'echo "$@" >> "$PBS_LOG/qstat.args"\n',
    "qdel": 'echo "$@" >> "$PBS_LOG/qdel.args"\n',
}


@pytest.fixture
def pbs_commands(tmp_path, monkeypatch):
    """A directory of qsub/qstat/qdel stand-ins, first on PATH; returns their log dir."""
    bin_dir, log_dir = tmp_path / "bin", tmp_path / "pbs-log"
    bin_dir.mkdir()
    log_dir.mkdir()
    for name, body in STAND_INS.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PBS_LOG", str(log_dir))
    return log_dir


def test_polaris_template_submits_the_expected_pbs_script(pbs_commands, tmp_path):
    template, schema = scheduler_example("pbspro")
    engine = build_engine(rendered(template, OPTIONS, schema).config.engine)
    engine.start("5fbe3a6d-0000-4b0e-8f2e-0e7f2c1c0a11", tmp_path)
    try:
        assert engine._executor.scale_out_facade(1), "the provider did not submit a block"
    finally:
        engine.shutdown()

    qsub = (pbs_commands / "qsub.args").read_text().split("\n")
    assert qsub[:4] == ["-q", "debug-scaling", "-A", "alcf_training"]
    script = Path(qsub[4]).read_text()
    assert Path(qsub[4]).parent == tmp_path / "submit_scripts"

    directives = re.findall(r"^#PBS (.*)$", script, re.M)
    assert "-l walltime=00:45:00" in directives
    assert "-l select=2:ncpus=64:ngpus=4" in directives
    assert "-l filesystems=home:eagle:grand" in directives
    assert "module load conda; conda activate /grand/env" in script

    # The launcher: one worker pool per node (WORKERCOUNT = nodes), through mpiexec.
    assert "WORKERCOUNT=2\n" in script
    launch = [line for line in script.splitlines() if line.startswith("mpiexec")]
    assert launch == [
        "mpiexec --cpu-bind none --ppn 1 -n $WORKERCOUNT --hostfile $HOSTFILE"
        " /usr/bin/sh ${SCRIPT_DIR:+$SCRIPT_DIR/}cmd_$JOBNAME.sh"
    ]
    # The pool each rank runs: this Python, four workers pinned one per GPU.
    pool = re.search(
        r"^(\S+) -m uep\.worker_pool (.*)$",
        script,
        re.M,
    )
    assert pool and pool.group(1) == sys.executable
    args = pool.group(2)
    assert "--max_workers_per_node=4" in args
    assert "--cpu-affinity list:24-31,56-63:16-23,48-55:8-15,40-47:0-7,32-39" in args
    assert args.endswith("--available-accelerators 0 1 2 3")
    # Stopping the engine cancels the block it started.
    assert (pbs_commands / "qdel.args").read_text().split() == ["4242.polaris-pbs-01"]
