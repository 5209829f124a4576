#!/usr/bin/env python3
"""External mapping program for tests that never answers: it starts a child
that also sleeps, writes both pids to RECORD_FILE, and waits forever."""

import json
import os
import subprocess
import sys
import time

child = subprocess.Popen(["sleep", "600"])
with open(sys.argv[1], "w") as record:
    json.dump({"pids": [child.pid, os.getpid()]}, record)
while True:
    time.sleep(60)
