"""mep.forked_call: a call made in a forked child comes back as JSON, or as its refusal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mep.forked_call import call_in_child
from mep.registration import EX_NOPERM, EX_SOFTWARE, RegistrationError


def test_the_value_comes_back_and_the_child_is_reaped():
    answer = call_in_child(lambda: {"pid": os.getpid(), "items": [1, "two", None]})
    assert answer["items"] == [1, "two", None]
    assert answer["pid"] != os.getpid()
    with pytest.raises(ChildProcessError):
        os.waitpid(answer["pid"], os.WNOHANG)


def test_a_refusal_keeps_its_exit_code_and_message():
    def refuse():
        raise RegistrationError(EX_NOPERM, "the service refused our credentials (401)")

    with pytest.raises(RegistrationError) as caught:
        call_in_child(refuse)
    assert caught.value.exit_code == EX_NOPERM
    assert str(caught.value) == "the service refused our credentials (401)"


def test_any_other_failure_names_itself():
    with pytest.raises(RegistrationError) as caught:
        call_in_child(lambda: 1 / 0)
    assert caught.value.exit_code == EX_SOFTWARE
    assert "ZeroDivisionError" in str(caught.value)


def test_an_answer_that_is_not_json_is_a_failure_not_a_crash():
    with pytest.raises(RegistrationError) as caught:
        call_in_child(lambda: {1, 2})
    assert caught.value.exit_code == EX_SOFTWARE
    assert "TypeError" in str(caught.value)


def test_a_child_that_dies_without_answering_is_reported():
    with pytest.raises(RegistrationError) as caught:
        call_in_child(lambda: os._exit(3))
    assert caught.value.exit_code == EX_SOFTWARE
    assert "gave no answer (wait status 768)" in str(caught.value)


def test_the_parent_never_imports_what_the_call_imports():
    """The point of the child: what the call loads stays out of the long-lived process."""
    program = (
        "import sys\n"
        "from mep.forked_call import call_in_child\n"
        "def call():\n"
        "    import globus_sdk\n"
        "    return 'globus_sdk' in sys.modules\n"
        "print(call_in_child(call), 'globus_sdk' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["True", "False"], done.stderr
