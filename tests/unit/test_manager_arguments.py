"""mep.manager_process.parse_arguments: the monitor's command line for its manager."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mep.manager_process import EX_USAGE, Arguments, parse_arguments


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["ep", "/etc/ep"], Arguments("ep", "/etc/ep")),
        (
            [
                "ep",
                "/etc/ep",
                "--multi-user",
                "--console",
                "--debug",
                "--files",
                '{"config": "/c"}',
            ],
            Arguments("ep", "/etc/ep", True, True, True, {"config": "/c"}),
        ),
        (["--files", "{}", "ep", "--debug", "/etc/ep"], Arguments("ep", "/etc/ep", debug=True)),
    ],
)
def test_what_the_monitor_passes_is_read_back(argv, expected):
    assert parse_arguments(argv) == expected


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ep"], "expected NAME and ENDPOINT_DIR, got 1 arguments"),
        (["ep", "/etc/ep", "extra"], "expected NAME and ENDPOINT_DIR, got 3 arguments"),
        (["ep", "/etc/ep", "--verbose"], "unknown option --verbose"),
        (["ep", "/etc/ep", "--files"], "--files needs a JSON object"),
        (["ep", "/etc/ep", "--files", "[1]"], "--files needs a JSON object"),
        (["ep", "/etc/ep", "--files", "{nope"], "--files needs a JSON object"),
    ],
)
def test_a_wrong_command_line_is_refused_with_the_reason(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_arguments(argv)


def test_the_manager_exits_with_a_usage_error_and_loads_no_argparse():
    program = (
        "import sys\n"
        "from mep.manager_process import main\n"
        "code = main(['ep'])\n"
        "print(code, 'argparse' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == [str(EX_USAGE), "False"]
    assert "expected NAME and ENDPOINT_DIR" in done.stderr
