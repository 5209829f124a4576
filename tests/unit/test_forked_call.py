"""wire.forked_call: a call made in a forked child comes back as JSON, or as its failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mep import manager_process
from mep.registration import EX_NOPERM, EX_SOFTWARE, RegistrationError
from tests.processes import alive
from wire.forked_call import ChildCallFailed, call_in_child


def test_the_value_comes_back_and_the_child_is_reaped():
    answer = call_in_child(lambda: {"pid": os.getpid(), "items": [1, "two", None]})
    assert answer["items"] == [1, "two", None]
    assert answer["pid"] != os.getpid()
    with pytest.raises(ChildProcessError):
        os.waitpid(answer["pid"], os.WNOHANG)


def test_any_failure_names_itself():
    with pytest.raises(ChildCallFailed, match=r"^ZeroDivisionError: division by zero$"):
        call_in_child(lambda: 1 / 0)


def test_an_answer_that_is_not_json_is_a_failure_not_a_crash():
    with pytest.raises(ChildCallFailed, match="TypeError"):
        call_in_child(lambda: {1, 2})


def test_a_child_that_dies_without_answering_is_reported():
    with pytest.raises(ChildCallFailed, match=r"gave no answer \(wait status 768\)"):
        call_in_child(lambda: os._exit(3))


def test_a_registration_refusal_keeps_its_exit_code_and_message():
    def refuse():
        raise RegistrationError(EX_NOPERM, "the service refused our credentials (401)")

    def exchange():
        try:
            refuse()
        except RegistrationError as e:
            return {"refused": [e.exit_code, str(e)]}

    with pytest.raises(RegistrationError) as caught:
        manager_process._registering_child(exchange)
    assert caught.value.exit_code == EX_NOPERM
    assert str(caught.value) == "the service refused our credentials (401)"


def test_a_registering_child_that_fails_is_a_software_error():
    with pytest.raises(RegistrationError) as caught:
        manager_process._registering_child(lambda: os._exit(3))
    assert caught.value.exit_code == EX_SOFTWARE
    assert str(caught.value) == (
        "the registration failed: the child process gave no answer (wait status 768)"
    )


@pytest.mark.parametrize(
    "call, module",
    [
        ("import globus_sdk", "globus_sdk"),
        ("from mep.launch import fernet_token; fernet_token('A' * 43 + '=', 'x')", "cryptography"),
    ],
)
def test_the_parent_never_imports_what_the_call_imports(call, module):
    """The point of the child: what the call loads stays out of the long-lived process."""
    program = (
        "import sys\n"
        "from wire.forked_call import call_in_child\n"
        "def call():\n"
        f"    {call}\n"
        f"    return {module!r} in sys.modules\n"
        f"print(call_in_child(call), {module!r} in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["True", "False"], done.stderr


def test_the_child_dies_with_its_caller(tmp_path):
    """A caller killed while its child works (a registration stuck on the network,
    a render) takes the child with it: nothing is left running as an orphan."""
    pid_file = tmp_path / "child.pid"
    program = (
        "import os, time\n"
        "from wire.forked_call import call_in_child\n"
        "def stuck():\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "call_in_child(stuck)\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", program])
    child = None
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert alive(child)
        caller.kill()
        caller.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the child outlived its killed caller"
    finally:
        caller.kill()
        caller.wait(timeout=10)
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)
