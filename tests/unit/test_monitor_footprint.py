"""The root monitor stays small: it lives as long as the endpoint, as root."""

import json
import subprocess
import sys

from mep.monitor.containment import _component
from mep.monitor.server import endpoint_key


def test_the_monitor_loads_no_openssl():
    """hashlib and ssl map OpenSSL's libcrypto into root's long-lived process (0.7 MiB
    of PSS); nothing the monitor does needs a cryptographic library."""
    program = (
        "import json, sys\n"
        "import mep.monitor.__main__\n"
        "print(json.dumps(sorted({'_hashlib', 'hashlib', '_ssl', 'ssl'} & set(sys.modules))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_endpoint_key_is_stable_distinct_and_a_cgroup_name():
    key = endpoint_key("ep", "/etc/compute-agent/ep")
    assert key == endpoint_key("ep", "/etc/compute-agent/ep/")
    assert key != endpoint_key("ep", "/srv/endpoints/ep")
    assert key != endpoint_key("other", "/etc/compute-agent/ep")
    assert key.startswith("ep.") and _component(key) == key
