"""`probe.plan`: the best row, its source, fallbacks, estimates on the fly, what would fit."""

import pytest

from probe.plan import advise_smaller, plan, too_small_message, what_fits
from probe.table import Device, Row, Table, TableFile, write_table

GIB = 1024**3


def table_file(tmp_path, source, rows, device="estimated tiers (any CUDA card)", attention="sdpa", precision="fp16", name=None):
    t = Table("s1", precision, attention, "full", 0.1)
    for vram_gb, slice_s, dpo, batch in rows:
        t.put(Row(int(vram_gb * GIB), slice_s, dpo, batch, batch, int(vram_gb * GIB * 0.8) if batch else None, None, None, source))
    tf = TableFile(source, Device(device, None, None), {"torch": "2.11.0"}, [t])
    write_table(tf, tmp_path / (name or f"{source}.yaml"))
    return tf


@pytest.fixture
def tables(tmp_path):
    return [
        table_file(tmp_path, "community", [(8, 10.0, False, 2), (12, 10.0, False, 4)], attention="sdpa"),
        table_file(tmp_path, "estimated", [(8, 10.0, False, 20), (8, 15.0, False, 12), (16, 10.0, False, 40), (8, 10.0, True, 0)]),
        table_file(tmp_path, "measured", [(8, 10.0, False, 17)], device="NVIDIA GeForce RTX 4060", name="measured.yaml"),
    ]


def test_an_exact_row_answers_and_measured_beats_estimated_beats_community(tables):
    result = plan(8 * GIB, "s1", 10.0, tables=tables)
    assert (result.max_batch_size, result.source) == (17, "measured")
    assert result.table.endswith("measured.yaml")
    json = result.to_json()
    for key in ("workload", "slice_seconds", "dpo", "precision", "vram_bytes", "max_batch_size", "recommended_batch_size", "predicted_peak_bytes", "source", "table"):
        assert key in json
    assert plan(8 * GIB, "s1", 10.0, tables=tables[:2]).source == "estimated"
    fallback = plan(12 * GIB, "s1", 10.0, tables=tables, allow_estimate=False)
    assert (fallback.source, fallback.row_vram_bytes) == ("measured", 8 * GIB)  # ours from a smaller card before the article's exact row
    lore = plan(12 * GIB, "s1", 10.0, tables=tables[:1], allow_estimate=False)
    assert (lore.source, lore.max_batch_size) == ("community", 4) and lore.note.startswith("community lore")


def test_without_an_exact_row_it_never_promises_more_than_a_smaller_card_or_longer_slice(tables):
    result = plan(10 * GIB, "s1", 12.0, tables=tables, allow_estimate=False)
    assert (result.row_vram_bytes, result.row_slice_seconds, result.max_batch_size) == (8 * GIB, 15.0, 12)
    assert "no exact row" in result.note


def test_nothing_to_answer_from_is_a_lookup_error(tables):
    with pytest.raises(LookupError, match="run `advisor probe`"):
        plan(4 * GIB, "s1", 10.0, tables=tables, allow_estimate=False)
    with pytest.raises(ValueError, match="DPO"):
        plan(8 * GIB, "s2", 10.0, dpo=True, tables=tables)


def test_a_card_too_small_for_batch_one_says_so_and_what_would_fit(tables):
    result = plan(8 * GIB, "s1", 10.0, dpo=True, tables=tables)
    assert not result.fits
    alternatives = what_fits(result, tables, allow_estimate=False)
    assert [(a.change, a.result.max_batch_size) for a in alternatives] == [("DPO off", 17)]
    message = too_small_message(result, alternatives)
    assert "too small for batch 1" in message and "DPO off: batch 17" in message and "\n" not in message


def test_estimates_on_the_fly_when_no_table_has_the_row():
    result = plan(10 * GIB, "s1", 10.0, precision="bf16", tables=[])
    assert result.source == "estimated" and result.table is None
    assert result.max_batch_size >= 1
    assert result.predicted_peak_bytes <= 10 * GIB * 0.9
    smaller = plan(6 * GIB, "s1", 10.0, precision="bf16", tables=[])
    assert smaller.max_batch_size < result.max_batch_size


def test_advice_for_a_run_whose_batch_one_ran_out_of_memory_without_a_card():
    text = advise_smaller("s1", 10.0, True, "fp32")
    assert "shorter slices, DPO off or a lower precision" in text
    text = advise_smaller("s1", 10.0, False, "fp16", vram_bytes=1 * GIB)
    assert "too small for batch 1" in text


def test_gradient_checkpointing_rows_answer_only_a_plan_with_it(tmp_path):
    plain, ckpt = Table("s2-v4", "fp16", None, "full", 0.1), Table("s2-v4", "fp16", None, "full", 0.1, grad_ckpt=True)
    plain.put(Row(8 * GIB, 10.0, False, 2, 2, 7 * GIB, None, None, "estimated"))
    ckpt.put(Row(8 * GIB, 10.0, False, 13, 13, 7 * GIB, None, None, "estimated"))
    tf = TableFile("estimated", Device("estimated tiers (any CUDA card)", None, None), {"torch": "2.13.0"}, [plain, ckpt])
    assert plan(8 * GIB, "s2-v4", 10.0, tables=[tf], allow_estimate=False).max_batch_size == 2
    answer = plan(8 * GIB, "s2-v4", 10.0, tables=[tf], allow_estimate=False, grad_ckpt=True)
    assert answer.max_batch_size == 13 and answer.grad_ckpt and answer.to_json()["grad_ckpt"] is True
    with pytest.raises(ValueError, match="--grad-ckpt: gradient checkpointing is an option of s2-v3, s2-v4 only, not s2-v2"):
        plan(8 * GIB, "s2-v2", 10.0, tables=[tf], grad_ckpt=True)


def test_v4_too_big_for_a_card_names_gradient_checkpointing_first():
    """Shipped rows: s2-v4 15 s fp16 does not fit 6 GiB without checkpointing and fits 9 with it;
    what would fit names --grad-ckpt, and the OOM advice of a checkpointed run reads its own rows."""
    result = plan(6 * GIB, "s2-v4", 15.0, precision="fp16", allow_estimate=False)
    assert not result.fits
    alternatives = what_fits(result, allow_estimate=False)
    assert alternatives[0].change == "--grad-ckpt" and alternatives[0].result.max_batch_size == 9
    assert "would fit: --grad-ckpt: batch 9" in too_small_message(result, alternatives)
    assert "expect batch 9 to fit" in advise_smaller("s2-v4", 15.0, False, "fp16", vram_bytes=6 * GIB, allow_estimate=False, grad_ckpt=True)
