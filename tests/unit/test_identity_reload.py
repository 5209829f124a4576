"""Hot reload of the mapping file: valid changes swap in, invalid ones keep the old mapper."""

from __future__ import annotations

import json
import logging
import os
import threading

import pytest

from identity.mapping import MappingConfigError
from identity.reload import MappingSource

IDENTITY = {"id": "i-1", "username": "alice@example.org", "status": "used"}


def document(output):
    return [
        {
            "DATA_TYPE": "expression_identity_mapping#1.0.0",
            "mappings": [{"source": "{username}", "match": "(.*)@example\\.org", "output": output}],
        }
    ]


def write(path, data, *, bump=0):
    """Write and move mtime forward so a same-size rewrite is still a visible change."""
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    status = os.stat(path)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + bump * 1_000_000_000))


@pytest.fixture
def mapping_file(tmp_path):
    path = tmp_path / "idmap.json"
    write(path, document("first-{0}"))
    return path


def local_user(source):
    return source.current().map([IDENTITY]).local_user


def test_valid_change_is_swapped_in(mapping_file):
    source = MappingSource.from_path(mapping_file)
    assert local_user(source) == "first-alice"
    write(mapping_file, document("second-{0}"), bump=1)
    assert local_user(source) == "second-alice"
    assert source.last_error is None


def test_replacing_the_file_by_rename_is_seen(mapping_file, tmp_path):
    source = MappingSource.from_path(mapping_file)
    replacement = tmp_path / "new.json"
    write(replacement, document("renamed-{0}"))
    os.replace(replacement, mapping_file)
    assert local_user(source) == "renamed-alice"


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("[{", "not valid JSON"),
        ([{"DATA_TYPE": "expression_identity_mapping#1.0.0"}], "document 0, field 'mappings'"),
        (document("{3}"), "mappings[0].output"),
    ],
)
def test_invalid_change_keeps_the_previous_mapper_and_logs_why(mapping_file, caplog, bad, words):
    source = MappingSource.from_path(mapping_file)
    before = source.current()
    write(mapping_file, bad, bump=1)
    with caplog.at_level(logging.INFO, logger="identity.reload"):
        assert source.current() is before
    assert local_user(source) == "first-alice"
    assert words in source.last_error
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "keeping the previous mapping" in errors[0] and words in errors[0]
    assert any("changed; rereading" in r.getMessage() for r in caplog.records)


def test_bad_file_is_not_retried_until_it_changes_then_a_fix_is_picked_up(mapping_file, caplog):
    source = MappingSource.from_path(mapping_file)
    write(mapping_file, "[{", bump=1)
    with caplog.at_level(logging.ERROR, logger="identity.reload"):
        for _ in range(3):
            source.current()
    assert len(caplog.records) == 1
    write(mapping_file, document("fixed-{0}"), bump=2)
    assert local_user(source) == "fixed-alice"
    assert source.last_error is None


def test_deleted_file_keeps_the_previous_mapper(mapping_file):
    source = MappingSource.from_path(mapping_file)
    mapping_file.unlink()
    assert local_user(source) == "first-alice"
    assert "cannot read" in source.last_error


def test_reload_rereads_even_without_a_visible_change(mapping_file):
    source = MappingSource.from_path(mapping_file)
    status = os.stat(mapping_file)
    write(mapping_file, document("sighup-{0}"))
    os.utime(mapping_file, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert source.reload() is True
    assert local_user(source) == "sighup-alice"
    write(mapping_file, "[", bump=1)
    assert source.reload() is False
    assert local_user(source) == "sighup-alice"


def test_invalid_file_at_start_up_raises(tmp_path):
    path = tmp_path / "idmap.json"
    write(path, {"not": "a list"})
    with pytest.raises(MappingConfigError, match="JSON list"):
        MappingSource.from_path(path)


def test_load_warnings_are_logged(tmp_path, caplog):
    path = tmp_path / "idmap.json"
    write(path, [{"DATA_TYPE": "ldap_identity_mapping#1.0.0"}, *document("{0}")])
    with caplog.at_level(logging.WARNING, logger="identity.reload"):
        MappingSource.from_path(path)
    assert any("ldap_identity_mapping#1.0.0" in r.getMessage() for r in caplog.records)


def test_concurrent_readers_always_see_a_whole_mapper(mapping_file):
    """Readers racing a writer get either the old or the new mapping, never an error."""
    source = MappingSource.from_path(mapping_file)
    seen, failures, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add(local_user(source))
            except Exception as error:
                failures.append(error)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for number in range(1, 30):
            write(mapping_file, document(f"v{number}-{{0}}"), bump=number)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert failures == []
    assert local_user(source) == "v29-alice"
    assert seen <= {"first-alice"} | {f"v{n}-alice" for n in range(1, 30)}
