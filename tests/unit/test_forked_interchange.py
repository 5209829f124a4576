"""The forked interchange answers Parsl's Popen calls, and the child it forks
holds none of its parent's descriptors.

Each case runs in a fresh interpreter: forking freezes the parent's collector.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROGRAM = """
import json, os, pickle, signal, subprocess, sys, time
from uep import forked_interchange

class Stubborn(forked_interchange.ForkedProgram):
    '''A child that reports its descriptors, then ignores SIGTERM until killed.'''

    def _child(self, read):
        forked_interchange._forget_the_endpoint(read)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with os.fdopen(read, "rb") as pipe:
            out = pickle.load(pipe)
        with open(out, "w") as f:
            json.dump(sorted(int(fd) for fd in os.listdir("/proc/self/fd")), f)
        while True:
            time.sleep(1)

held = os.open(sys.argv[1] + ".held", os.O_WRONLY | os.O_CREAT)
answers = {"held": os.dup2(held, 50, inheritable=False)}
child = Stubborn(["stubborn"], stdin=subprocess.PIPE)
child.stdin.write(pickle.dumps(sys.argv[1]))
child.stdin.close()
while not os.path.exists(sys.argv[1]) or not open(sys.argv[1]).read():
    time.sleep(0.05)
answers["child_fds"] = json.load(open(sys.argv[1]))
answers["running"] = child.poll()
child.terminate()
try:
    child.wait(timeout=0.5)
    answers["timed_out"] = False
except subprocess.TimeoutExpired:
    answers["timed_out"] = True
child.kill()
answers["killed"] = child.wait(timeout=10)
answers["again"] = child.poll()
print(json.dumps(answers))
"""


def test_its_popen_face_and_a_child_without_the_parents_descriptors(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path / "fds.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["held"] not in seen["child_fds"]
    # stdin, stdout, stderr, the configuration pipe (closed once read) and the
    # listing's own descriptor: nothing of the parent's
    assert max(seen["child_fds"]) <= 4
    assert seen["running"] is None
    assert seen["timed_out"] is True
    assert seen["killed"] == -9
    assert seen["again"] == -9
