"""Researcher code for the Flows e2e test: register the flow's functions with the official SDK.

Prints one JSON object, function name -> function id. ``square`` and
``describe`` are the README's example flow's functions.
"""

import json

from globus_compute_sdk import Client


def square(x):
    return x * x


def describe(n, unit):
    return f"{n} {unit}"


def whoami():
    import getpass
    import os

    return {"user": getpass.getuser(), "uid": os.getuid()}


def fails(reason):
    raise RuntimeError(f"raised by the flow's function: {reason}")


def napper(seconds):
    import time

    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    client = Client()
    functions = (square, describe, whoami, fails, napper)
    print(json.dumps({f.__name__: client.register_function(f) for f in functions}))
