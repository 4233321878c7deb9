"""The background prefetcher (trainer/data/prefetch.py): order, errors naming the clip, shutdown."""

import time

import pytest
import torch

from trainer.audio_constants import HOP_LENGTH
from trainer.data.buckets import BucketPlan, epoch_plan, make_plan, share
from trainer.data.dataset import save_atomic
from trainer.data.listfile import file_sha256
from trainer.data.loader import PreparedDataset
from trainer.data.manifest import FORMAT, VERSION, write_json
from trainer.data.padding import add_spectrogram, pad_batch
from trainer.data.prefetch import Prefetcher, clip_loader


def write_dataset(root, frames):
    """A prepared dataset (the files `advisor prepare` writes) of clips of `frames` 50 Hz frames."""
    (root / "clips").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    records = []
    for i, f in enumerate(frames):
        path = root / "clips" / f"c{i}.pt"
        stored = {
            "wav": 0.1 * torch.randn(f * HOP_LENGTH, generator=g),
            "ssl": torch.randn(768, f, generator=g).half(),
            "semantic_ids": torch.randint(0, 1024, (f // 2,), generator=g).short(),
            "phoneme_ids": torch.randint(1, 700, (max(1, f // 4),), generator=g).short(),
            "sv_emb": torch.randn(20480, generator=g).half(),
            "meta": {"id": f"c{i}", "seconds": f / 50, "frames": f},
        }
        save_atomic(stored, path)
        records.append({"id": f"c{i}", "file": f"clips/c{i}.pt", "seconds": f / 50, "frames": f, "splits": ["train"],
                        "bytes": path.stat().st_size, "sha256": file_sha256(path)})
    write_json(root / "manifest.json", {"format": FORMAT, "version": VERSION, "complete": True, "slice_seconds": 3.0, "clips": records})
    return root


FRAMES = [40, 90, 60, 150, 45, 100, 70, 140]


@pytest.fixture
def dataset(tmp_path):
    return PreparedDataset(write_dataset(tmp_path / "ds", FRAMES))


def test_batches_arrive_in_the_plans_order_padded_to_their_own_longest(dataset):
    plan = make_plan(FRAMES, [90, 150], [2, 2], effective=2)
    steps = epoch_plan(plan, seed=0, epoch=0)
    load = clip_loader(dataset, lambda samples: pad_batch("s2", samples, spectrogram=False))
    with Prefetcher([s.clips for s in steps], load, finish=add_spectrogram) as batches:
        got = list(batches)
    assert len(got) == len(steps) and len(batches.waits) == len(steps)
    for step, batch in zip(steps, got):
        lens = [FRAMES[i] for i in step.clips]
        assert batch["spec_lens"].tolist() == lens  # the same clips, in the step's order
        assert batch["spec"].shape[-1] == batch["ssl"].shape[-1] == max(lens) <= plan.buckets[step.bucket].bound
    assert all(w >= 0 for w in batches.waits)


def test_a_damaged_clip_is_named_in_the_consumer(dataset, tmp_path):
    (tmp_path / "ds" / "clips" / "c3.pt").write_bytes(b"\0" * (tmp_path / "ds" / "clips" / "c3.pt").stat().st_size)
    load = clip_loader(dataset, lambda samples: pad_batch("s1", samples))
    batches = Prefetcher([[0, 1], [2, 3], [4, 5]], load)
    assert next(batches)["semantic_ids"].shape[0] == 2  # the batch before the damage arrives
    with pytest.raises(ValueError, match=r"clips/c3\.pt: damaged clip file \(sha256"):
        next(batches)
    assert not batches.alive
    with pytest.raises(StopIteration):
        next(batches)


def test_a_collate_error_names_the_clips(dataset):
    def refuse(samples):
        raise RuntimeError("no room")

    with Prefetcher([[6, 7]], clip_loader(dataset, refuse)) as batches:
        with pytest.raises(ValueError, match=r"clips .*clips/c6\.pt, .*clips/c7\.pt: RuntimeError: no room"):
            next(batches)


def test_close_stops_a_thread_that_is_ahead_and_is_idempotent():
    loaded = []

    def load(i):
        loaded.append(i)
        return {"x": torch.full((1,), i)}

    batches = Prefetcher(range(10_000), load, depth=2)
    assert int(next(batches)["x"]) == 0
    time.sleep(0.2)
    batches.close()
    batches.close()
    assert not batches.alive and len(loaded) <= 6  # they stopped ahead by the depth, not at the end


@pytest.mark.parametrize("workers", [1, 3])
def test_order_holds_with_several_threads_and_an_error_arrives_at_its_batch(workers):
    def load(i):
        if i == 7:
            raise OSError("disk gone")
        time.sleep(0.01 * (i % 3))  # threads finish out of order
        return {"x": torch.full((1,), i)}

    batches = Prefetcher(range(10), load, workers=workers, depth=4)
    assert [int(next(batches)["x"]) for _ in range(7)] == list(range(7))
    with pytest.raises(OSError, match="disk gone"):
        next(batches)
    assert not batches.alive


def test_the_consumer_does_not_wait_when_loading_keeps_up():
    def load(i):
        return {"x": torch.full((2,), i)}

    with Prefetcher(range(5), load, depth=3) as batches:
        time.sleep(0.2)  # the thread fills the queue while "the step" runs
        out = [int(b["x"][0]) for b in batches]
    assert out == [0, 1, 2, 3, 4]
    assert max(batches.waits[:3]) < 0.05


def test_ddp_ranks_get_equal_shares_of_one_bucket(dataset):
    plan = BucketPlan.from_json(make_plan(FRAMES, [90, 150], [2, 2], effective=4, world=2).to_json())
    for step in epoch_plan(plan, 0, 1):
        shapes = []
        for rank in range(2):
            with Prefetcher([share(step.clips, rank, 2)], clip_loader(dataset, lambda s: pad_batch("s1", s))) as b:
                shapes.append(next(b)["semantic_ids"].shape[0])
        assert shapes[0] == shapes[1]


def test_a_bad_depth_is_refused():
    with pytest.raises(ValueError, match="depth 0 and workers 2"):
        Prefetcher([], lambda i: {}, depth=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_batches_arrive_pinned_copied_and_finished_on_the_gpu(dataset):
    on_gpu = []

    def finish(batch):
        on_gpu.append(all(v.device.type == "cuda" for v in batch.values()))
        return add_spectrogram(batch)

    load = clip_loader(dataset, lambda samples: pad_batch("s2", samples, spectrogram=False))
    batches = Prefetcher([[0, 1], [2, 3]], load, "cuda", finish=finish)
    ahead = batches._queues[1].get(timeout=30)  # batch 1 as the thread queued it: pinned host memory
    assert ahead[0] == "batch" and all(v.is_pinned() for v in ahead[1].values())
    batches._queues[1].put(ahead)
    with batches:
        got = list(batches)
    assert on_gpu == [True, True] and all(b["spec"].device.type == "cuda" for b in got)
    cpu = pad_batch("s2", [dataset[0], dataset[1]])
    torch.testing.assert_close(got[0]["spec"].cpu(), cpu["spec"], rtol=1e-4, atol=1e-4)


def test_each_clip_is_hashed_once_a_run_not_on_every_load(dataset, monkeypatch):
    import hashlib

    import trainer.data.loader as loader

    hashed, sha256 = [], hashlib.sha256

    def counting(data=b""):
        hashed.append(len(data))
        return sha256(data)

    monkeypatch.setattr(loader.hashlib, "sha256", counting)
    load = clip_loader(dataset, lambda samples: pad_batch("s1", samples))
    for _ in range(3):  # three epochs through the threads
        with Prefetcher([[0, 1], [2, 3]], load) as batches:
            assert len(list(batches)) == 2
    assert len(hashed) == 4  # clips 0-3, on their first load only
