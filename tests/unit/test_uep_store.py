"""The on-disk journal and result store survive a reopen, as after a crash."""

from uep.store import Store


def test_journal_results_and_answers_survive_a_reopen(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    store.accept([("t1", b"body1", "{}"), ("t2", b"body2", "{}")], [("t3", b"rejected")])
    store.add_results([("t1", b"result1")])
    store.close()

    store = Store(path)
    assert [row[0] for row in store.unfinished_tasks()] == ["t2"]
    assert sorted(store.pending_results()) == [("t1", b"result1"), ("t3", b"rejected")]
    assert store.known("t1") and store.known("t2") and store.known("t3")
    assert not store.known("t4")
    store.confirmed(["t1", "t3"])
    assert store.pending_results() == []
    assert store.known("t1"), "an answered task stays known, so a redelivery is not re-run"
    assert store.journaled("t2") and not store.journaled("t1")
