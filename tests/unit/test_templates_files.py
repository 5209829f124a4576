"""Reading an endpoint's schema and template files, and the shipped defaults."""

from __future__ import annotations

import pytest

from templates import files
from templates.errors import ConfigError


def test_default_text_only_serves_shipped_files():
    assert "engine:" in files.default_text("user_config_template.yaml.j2")
    with pytest.raises(KeyError):
        files.default_text("../pyproject.toml")


def test_read_schema(tmp_path):
    path = tmp_path / "s.json"
    assert files.read_schema(None) is None
    assert files.read_schema(path) is None
    path.write_text('{"type": "object"}')
    assert files.read_schema(path) == {"type": "object"}
    path.write_text("false")
    assert files.read_schema(path) is False
    path.write_text('{\n  "type": "object",\n  oops\n}')
    with pytest.raises(ConfigError, match="not valid JSON") as caught:
        files.read_schema(path)
    assert caught.value.line == 3 and caught.value.source == str(path)
    path.write_text("[1]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        files.read_schema(path)


def test_read_text_refuses_oversized_and_binary_files(tmp_path):
    big = tmp_path / "big.j2"
    big.write_text("x" * (files.MAX_TEMPLATE_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        files.read_text(big, "template")
    binary = tmp_path / "bin.j2"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read the template"):
        files.read_text(binary, "template")
