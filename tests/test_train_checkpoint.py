"""Checkpoints: atomic writes, verified loads, rotation that keeps best and latest finite, export."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest
import torch

from trainer.loop.checkpoint import Checkpointer, Manifest
from trainer.loop.export import exported_from, plain_export
from trainer.rundir import RunDir
from trainer.workloads import get_workload


@pytest.fixture
def state():
    torch.manual_seed(0)
    models = get_workload("s1", size="tiny").build("cpu")
    return {"workload": "s1", "size": "tiny", "models": {"gpt": models["gpt"].state_dict()}, "rng": [{"torch": torch.get_rng_state()}]}


def test_save_lists_a_complete_file_with_its_hash_and_leaves_no_temporary(tmp_path, state):
    run = RunDir(tmp_path)
    ckpt = Checkpointer(run, keep_last=3, metric_name="val_ce")
    entry = ckpt.save(state, step=5, epoch=1, metric=2.5, finite=True)
    path = tmp_path / entry.file
    assert entry.file == "checkpoints/step_00000005.pt"
    assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and entry.bytes == path.stat().st_size
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step_00000005.pt"]
    manifest = json.loads(run.manifest.read_text())
    assert manifest["latest"] == manifest["best"] == {"file": entry.file, "step": 5, "epoch": 1, "metric": 2.5}
    loaded = ckpt.load(entry)
    assert torch.equal(loaded["models"]["gpt"]["ar_predict_layer.weight"], state["models"]["gpt"]["ar_predict_layer.weight"])


def test_a_failed_write_leaves_the_previous_checkpoint_and_manifest_alone(tmp_path, state):
    run = RunDir(tmp_path)
    ckpt = Checkpointer(run, keep_last=3, metric_name="val_ce")
    ckpt.save(state, 1, 0, None, True)
    before = run.manifest.read_bytes()
    with pytest.raises((AttributeError, pickle.PicklingError)):
        ckpt.save({**state, "bad": lambda: None}, 2, 0, None, True)  # a lambda cannot be pickled: torch.save fails midway
    assert run.manifest.read_bytes() == before
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step_00000001.pt"]


def test_truncated_or_damaged_files_are_skipped_for_the_next_older(tmp_path, state):
    run = RunDir(tmp_path)
    ckpt = Checkpointer(run, keep_last=5, metric_name="val_ce")
    first, second, third = (ckpt.save(state, s, 0, None, True) for s in (1, 2, 3))
    newest = tmp_path / third.file
    newest.write_bytes(newest.read_bytes()[:-100])  # torn
    damaged = bytearray((tmp_path / second.file).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same size, one bit pattern changed
    (tmp_path / second.file).write_bytes(bytes(damaged))

    entry, skipped = Checkpointer(run, 5, "val_ce").newest_verified()
    assert entry.file == first.file
    assert [s["file"] for s in skipped] == [third.file, second.file]
    assert "truncated" in skipped[0]["problem"] and "sha256" in skipped[1]["problem"]


def test_rotation_keeps_the_newest_the_best_and_the_latest_finite(tmp_path, state):
    run = RunDir(tmp_path)
    ckpt = Checkpointer(run, keep_last=2, metric_name="val_mel_l1")
    ckpt.save(state, 1, 0, 3.0, True)
    best = ckpt.save(state, 2, 0, 1.0, True)  # the best, then never beaten
    ckpt.save(state, 3, 0, 2.0, True)
    finite = ckpt.save(state, 4, 0, None, True)
    ckpt.save(state, 5, 0, float("nan"), False)  # diverged
    ckpt.save(state, 6, 0, None, False)
    names = [e.file for e in ckpt.manifest.entries]
    assert names == [best.file, finite.file, "checkpoints/step_00000005.pt", "checkpoints/step_00000006.pt"]
    assert sorted(p.name for p in run.checkpoints.iterdir()) == sorted(n.split("/")[1] for n in names)
    reread = Manifest.read(run.manifest, "val_mel_l1")
    assert reread.best.file == best.file and reread.latest_finite.file == finite.file
    entry, skipped = ckpt.newest_verified(finite_only=True)
    assert entry.file == finite.file
    assert [(s["file"], s["problem"]) for s in skipped] == [
        ("checkpoints/step_00000006.pt", "not finite (the weights had diverged)"),
        ("checkpoints/step_00000005.pt", "not finite (the weights had diverged)"),
    ]


def test_the_same_step_saved_twice_gets_a_second_name(tmp_path, state):
    ckpt = Checkpointer(RunDir(tmp_path), keep_last=3, metric_name="val_ce")
    a, b = ckpt.save(state, 4, 1, None, True), ckpt.save(state, 4, 1, 0.5, True)
    assert (a.file, b.file) == ("checkpoints/step_00000004.pt", "checkpoints/step_00000004.1.pt")


def test_clean_removes_temporaries_and_unlisted_checkpoints_only(tmp_path, state):
    run = RunDir(tmp_path)
    ckpt = Checkpointer(run, keep_last=3, metric_name="val_ce")
    kept = ckpt.save(state, 1, 0, None, True)
    (run.checkpoints / ".step_00000002.pt.abc.tmp").write_bytes(b"half")  # killed mid-write
    (run.checkpoints / "step_00000002.pt").write_bytes(b"renamed, but not yet listed")
    (run.checkpoints / "notes.txt").write_text("the user's")
    removed = Checkpointer(run, 3, "val_ce").clean()
    assert sorted(removed) == ["checkpoints/.step_00000002.pt.abc.tmp", "checkpoints/step_00000002.pt"]
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["notes.txt", kept.file.split("/")[1]]


def test_export_is_plain_state_dicts(tmp_path, state):
    run = RunDir(tmp_path)
    ckpt = Checkpointer(run, keep_last=3, metric_name="val_ce")
    entry = ckpt.save(state, 3, 1, 1.5, True)
    files = plain_export(ckpt, state["models"], {"workload": "s1", **entry.summary()})
    assert files == ["export/gpt.pt"]
    plain = torch.load(tmp_path / "export" / "gpt.pt", weights_only=True)
    assert plain.keys() == state["models"]["gpt"].keys()
    assert all(torch.equal(plain[k], v) for k, v in state["models"]["gpt"].items())
    assert exported_from(ckpt) == entry.file


def test_a_foreign_manifest_is_refused_by_name_and_rebuilt_from_the_checkpoint_files(tmp_path):
    run = RunDir(tmp_path)
    run.make()
    run.manifest.write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match=r"manifest.json: not a readable sovits-advisor-run v2 manifest"):
        Manifest.read(run.manifest, "val_ce")
    ckpt = Checkpointer(run, 3, "val_ce")  # the loop's reader falls back to the files, and says so
    assert ckpt.manifest.entries == [] and "rebuilt from 0 checkpoint file(s)" in ckpt.recovered["action"]
    assert (tmp_path / "manifest.json.damaged").read_text() == '{"format": "something-else"}'
    assert Manifest.read(run.manifest, "val_ce").entries == []
