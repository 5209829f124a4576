#!/usr/bin/env python3
"""External mapping program for tests: records what it was given, then maps
every identity whose username is ``NAME@example.org`` to ``NAME``.

Usage: record_and_map.py RECORD_FILE [-c CONNECTOR -s GATEWAY -a]
"""

import json
import os
import sys

received = sys.stdin.read()
with open(sys.argv[1], "w") as record:
    json.dump(
        {
            "argv": sys.argv,
            "env": dict(os.environ),
            "stdin": received,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "cwd": os.getcwd(),
        },
        record,
    )
identities = json.loads(received)["identities"]
result = [
    {"id": identity["id"], "output": identity["username"].split("@")[0]}
    for identity in identities
    if str(identity.get("username", "")).endswith("@example.org")
]
print(json.dumps({"DATA_TYPE": "identity_mapping_output#1.0.0", "result": result}))
