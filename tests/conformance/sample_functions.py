"""Functions the conformance tests serialize with the official SDK.

They live in a real module so source-text strategies (``inspect.getsource``)
can find their code, as they would in a researcher's script.
"""


def add(a, b=1):
    return a + b


def greet(name, *, greeting="Grüß Gott"):
    """Non-ASCII source: the packed length must count characters, not bytes."""
    return f"{greeting}, {name}! ✓ 漢字"


def make_multiplier(factor):
    def multiply(x):
        return x * factor

    return multiply


def fails(message):
    raise ValueError(message)


def total_size(blob, **extras):
    return len(blob) + sum(len(v) for v in extras.values())
