"""The avatar store: ids, tenants, atomic blobs and what recover() repairs after a crash (no server needed)."""
from __future__ import annotations

import pytest

from otavatar.server.store import FAILED, PENDING, READY, AvatarStore, new_id, validate_id


@pytest.fixture
def store(tmp_path):
    s = AvatarStore(tmp_path / "data")
    yield s
    s.close()


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "av_" + "0" * 31 + "/", "av_" + "A" * 32, "av_" + "0" * 32 + "\0",
                                 "x" * 10_000, "av_" + "0" * 33, "..", "/tmp/av_" + "0" * 32])
def test_malformed_ids_are_refused_before_any_path_is_built(store, bad):
    with pytest.raises(ValueError, match="avatar_id"):
        validate_id(bad)
    with pytest.raises(ValueError):
        store.blob_path(bad)


def test_ids_are_128_bit_random():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(validate_id(i) == i and len(i) == 35 for i in ids)


def test_lifecycle_and_tenants(store):
    record = store.create_pending("alice", "me")
    assert record.state == PENDING and store.get("bob", record.id) is None     # another tenant: not found
    store.complete(record.id, b"blob", "fp")
    ready = store.get("alice", record.id)
    assert ready.state == READY and store.read_blob(ready) == b"blob" and ready.fingerprint == "fp"
    assert [r.id for r in store.list("alice")] == [record.id] and store.list("bob") == []
    assert not store.delete("bob", record.id)
    assert store.delete("alice", record.id) and not store.blob_path(record.id).exists()


def test_wal_mode(store):
    assert store._execute("PRAGMA journal_mode")[0][0] == "wal"


def test_recover_repairs_every_crash_leftover(tmp_path):
    store = AvatarStore(tmp_path / "data")
    kept = store.import_ready("alice", b"kept", "fp")
    interrupted = store.create_pending("alice")                            # kill during inversion
    between = store.create_pending("alice")                                # kill between rename and commit
    store._write_blob(between.id, b"renamed but not committed")
    missing = store.import_ready("alice", b"gone", "fp")
    store.blob_path(missing.id).unlink()
    corrupt = store.import_ready("alice", b"good", "fp")
    store.blob_path(corrupt.id).write_bytes(b"bad!")
    (store.blobs / f".{new_id()}.1234.tmp").write_bytes(b"half")         # kill during the blob write
    orphan = store.blob_path(new_id())
    orphan.write_bytes(b"no row")                                          # kill during a delete / import
    store.close()

    store = AvatarStore(tmp_path / "data")
    report = store.recover()
    assert report.integrity == "ok"
    # removed: the .tmp; the orphan, the uncommitted blob and the corrupt one
    assert (report.temp_files_removed, report.orphan_blobs_removed) == (1, 3)
    assert (report.interrupted_failed, report.missing_blob_failed, report.corrupt_blob_failed) == (2, 1, 1)
    assert store.read_blob(store.get("alice", kept.id)) == b"kept"
    for r in (interrupted, between, missing, corrupt):
        after = store.get("alice", r.id)
        assert after.state == FAILED and after.reason, after
        assert not store.blob_path(r.id).exists()
    assert sorted(p.name for p in store.blobs.iterdir()) == [kept.id + ".avatar"]
    store.close()


def test_delete_during_creation_leaves_no_blob(store):
    record = store.create_pending("alice")
    store.delete("alice", record.id)
    with pytest.raises(ValueError, match="deleted while"):
        store.complete(record.id, b"late", "fp")
    assert not any(store.blobs.iterdir())
