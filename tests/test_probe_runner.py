"""The probe engine: atomic write after every cell, resume after an interruption."""

import os

import pytest

from probe.runner import Probe, ProbeConfig
from probe.table import TableError, read_table

MIB = 1024**2


def config(**changes) -> ProbeConfig:
    base = dict(
        precision="fp16",
        backend="estimated",
        workloads=("s1",),
        slice_seconds=(2.0, 4.0),
        tiers_bytes=(24 * MIB, 48 * MIB),
        size="tiny",
        dpo_modes=(False,),
        context_bytes=0,
        workspace_bytes=0,
    )
    return ProbeConfig(**{**base, **changes})


class Recorder:
    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.done, self.skipped = [], []

    def started(self, cells, tiers):
        self.shape = (cells, tiers)

    def cell_started(self, cell, index, total):
        return None  # only finished cells matter here

    def tier_done(self, cell, row):
        return None

    def cell_skipped(self, cell, rows):
        self.skipped.append(cell.label())

    def cell_done(self, cell, rows, path):
        self.done.append(cell.label())
        if self.stop_after is not None and len(self.done) >= self.stop_after:
            raise KeyboardInterrupt  # Ctrl-C right after the cell was written


def test_an_interrupted_probe_keeps_finished_cells_and_resumes_where_it_stopped(tmp_path):
    path = tmp_path / "table.yaml"
    first = Recorder(stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        Probe(config(), path, first).run()
    kept = read_table(path)  # whole and valid
    assert first.done == ["s1 2s"]
    assert {r.slice_seconds for r in kept.tables[0].rows} == {2.0}
    assert os.listdir(tmp_path) == ["table.yaml"]

    second = Recorder()
    finished = Probe(config(), path, second).run()
    assert second.skipped == ["s1 2s"] and second.done == ["s1 4s"]
    assert second.shape == (2, 2)
    assert {(r.slice_seconds, r.vram_bytes) for r in finished.tables[0].rows} == {(2.0, 24 * MIB), (2.0, 48 * MIB), (4.0, 24 * MIB), (4.0, 48 * MIB)}
    assert read_table(path).tables[0].rows == finished.tables[0].rows


def test_a_new_precision_adds_a_table_to_the_same_file(tmp_path):
    path = tmp_path / "table.yaml"
    Probe(config(slice_seconds=(2.0,)), path, Recorder()).run()
    Probe(config(slice_seconds=(2.0,), precision="bf16"), path, Recorder()).run()
    assert sorted(t.precision for t in read_table(path).tables) == ["bf16", "fp16"]


def test_resuming_with_another_margin_is_refused(tmp_path):
    path = tmp_path / "table.yaml"
    Probe(config(slice_seconds=(2.0,)), path, Recorder()).run()
    with pytest.raises(TableError, match="margin 0.1, not 0.2"):
        Probe(config(slice_seconds=(2.0, 4.0), margin=0.2), path, Recorder()).run()


def test_resuming_into_a_foreign_or_broken_file_is_refused_and_the_file_is_untouched(tmp_path):
    path = tmp_path / "table.yaml"
    path.write_text("schema: sovits-advisor/vram-table\nschema_version: 1\nsource: measured\n")
    with pytest.raises(TableError, match="table.yaml"):
        Probe(config(), path, Recorder()).run()
    assert path.read_text().endswith("source: measured\n")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": "fp8"}, "precision"),
        ({"backend": "guess"}, "backend"),
        ({"workloads": ("s3",)}, "workload"),
        ({"slice_seconds": (0.0,)}, "slice seconds"),
        ({"slice_seconds": (60.0,)}, "slice seconds"),
        ({"margin": 1.0}, "margin"),
        ({"tiers_bytes": ()}, "tiers"),
        ({"attention": "flash"}, "attention"),
    ],
)
def test_bad_probe_settings_are_value_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        config(**changes)


def test_cells_run_shorter_slices_first_and_dpo_after_plain():
    cells = config(workloads=("s1", "s2"), slice_seconds=(10.0, 5.0), dpo_modes=(True, False)).cells()
    assert [c.label() for c in cells] == ["s1 5s", "s1 10s", "s1 5s dpo", "s1 10s dpo", "s2 5s", "s2 10s"]


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_measured_probe_fills_smaller_cards_and_times_throughput(tmp_path):
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    table = Probe(config(backend="measured", tiers_bytes=(2 * 1024**3, 4 * 1024**3), slice_seconds=(2.0,)), tmp_path / "m.yaml", Recorder()).run()
    rows = table.tables[0].rows
    assert {r.vram_bytes for r in rows} == {2 * 1024**3, 4 * 1024**3, total}
    for r in rows:
        assert r.source == "measured" and r.max_batch_size >= 1
        assert 1 <= r.recommended_batch_size <= r.max_batch_size
        assert r.samples_per_second > 0 and r.peak_bytes <= r.vram_bytes * 0.9
