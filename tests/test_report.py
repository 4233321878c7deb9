"""`advisor report`: honest plot scales (read back from the matplotlib Axes), embedded samples, provenance."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from advisor.plots import FIGURES, MIN_RELATIVE_SPAN
from advisor.report import Record, read_run, write_report

NEAR_CONSTANT = [5.28492, 5.28490, 5.28489, 5.28491, 5.28490]  # the metric: a change in the fifth decimal


def axes_after_draw(fig):
    import matplotlib.pyplot as plt

    fig.canvas.draw()  # tick labels and the offset text exist only once drawn
    ax = fig.axes[0]
    plt.close(fig)
    return ax


def test_a_near_constant_validation_series_is_drawn_flat_without_offset_notation():
    r = Record(start={"metric_name": "val_ce"}, vals=[{"step": 10 * i, "value": v} for i, v in enumerate(NEAR_CONSTANT, 1)])
    ax = axes_after_draw(FIGURES["validation"](r))
    low, high = ax.get_ylim()
    mean = sum(NEAR_CONSTANT) / len(NEAR_CONSTANT)
    assert high - low >= 2 * MIN_RELATIVE_SPAN * mean * 0.999  # the scale is >= 2 % of the value: the curve is flat
    drawn = (max(NEAR_CONSTANT) - min(NEAR_CONSTANT)) / (high - low)
    assert drawn < 0.001  # the wobble covers under 0.1 % of the plot's height (it filled all of it before)
    assert ax.yaxis.get_major_formatter().get_offset() == ""  # no "1e-5+5.2849"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert all("e" not in x and "+" not in x for x in labels) and any(x.startswith("5.") for x in labels), labels
    assert any("a change of 3e-05" in t.get_text() for t in ax.texts)  # the change, stated as a number


def test_a_real_change_keeps_its_own_scale():
    values = [0.72, 0.58, 0.46, 0.41, 0.45]
    r = Record(vals=[{"step": 20 * i, "value": v} for i, v in enumerate(values, 1)])
    ax = axes_after_draw(FIGURES["validation"](r))
    low, high = ax.get_ylim()
    assert low > 0.3 and high < 0.8 and not ax.texts  # matplotlib's own margins: nothing widened, nothing noted


def test_a_nearly_constant_lr_is_a_flat_line_on_a_linear_axis():
    steps = [{"step": i, "lr": {"gpt": 1e-4 * (1 - 0.0004 * i / 50)}} for i in range(1, 51)]  # -0.04 % over the run
    ax = axes_after_draw(FIGURES["lr"](Record(steps=steps)))
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "linear" and high - low >= 2 * MIN_RELATIVE_SPAN * 1e-4 * 0.99
    assert ax.yaxis.get_major_formatter().get_offset() == ""
    cut = [{"step": i, "lr": {"gpt": 1e-4 if i < 25 else 2.5e-5}} for i in range(1, 51)]
    assert axes_after_draw(FIGURES["lr"](Record(steps=cut))).get_yscale() == "log"  # a real cut: log scale


def _wav(path, seconds: float, amplitude: float = 0.3) -> None:
    from trainer.data import audio_backend

    t = np.arange(int(32000 * seconds)) / 32000
    path.parent.mkdir(parents=True, exist_ok=True)
    audio_backend.soundfile().write(str(path), (amplitude * np.sin(2 * np.pi * 220 * t)).astype("float32"), 32000, subtype="PCM_16")


def _run(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    init = {"path": "/g/GPT_SoVITS/pretrained_models/s1v3.ckpt", "sha256": "0f" * 32, "kind": "GPT-SoVITS s1 pretrained"}
    events = [
        {"time": 1.0, "kind": "start", "step": 0, "workload": "s1", "size": "tiny", "precision": "fp32", "micro_batch": 4,
         "accumulation": 1, "effective_batch": 8, "world_size": 2, "total_steps": 4, "init": init, "metric_name": "val_ce"},
        {"time": 2.0, "kind": "val", "step": 2, "metric": "val_ce", "value": 5.2849},
        {"time": 2.5, "kind": "samples", "step": 2, "folder": "samples/step_00000002", "files": [], "clips": []},
        {"time": 3.0, "kind": "export", "step": 4, "source": "best", "files": ["export/GPT_weights_v2Pro/v-e1.ckpt", "export/info.json"],
         "copied_to": ["/g/GPT_weights_v2Pro/v-e1.ckpt"]},
        {"time": 3.5, "kind": "end", "step": 4, "reason": "epochs"},
    ]
    (root / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    for i in range(3):
        _wav(root / "samples" / "step_00000002" / f"0{i}_clip.wav", 1.0)
    return root


def test_the_page_embeds_its_samples_and_names_where_the_weights_came_from_and_went(tmp_path):
    root = _run(tmp_path)
    page = write_report(root, tmp_path / "mailed" / "page.html")
    text = page.read_text()
    players = re.findall(r"<audio controls preload='none' src='data:audio/wav;base64,([A-Za-z0-9+/=]+)'>", text)
    assert len(players) == 3 and all(base64.b64decode(p)[:4] == b"RIFF" for p in players)
    assert base64.b64decode(players[0]) == (root / "samples" / "step_00000002" / "00_clip.wav").read_bytes()
    assert "../" not in text and "are linked, not embedded" not in text  # plays anywhere, mailed or copied
    assert "/g/GPT_SoVITS/pretrained_models/s1v3.ckpt (GPT-SoVITS s1 pretrained, sha256 0f0f0f0f0f0f0f0f)" in text
    assert "export/GPT_weights_v2Pro/v-e1.ckpt" in text and "/g/GPT_weights_v2Pro/v-e1.ckpt" in text
    assert "4 x 1 x 2 processes = 8" in text
    assert read_run(root / "events.jsonl").export["copied_to"] == ["/g/GPT_weights_v2Pro/v-e1.ckpt"]


def test_past_the_embedding_limit_the_samples_are_linked_and_the_page_says_so(tmp_path):
    root = _run(tmp_path)
    one = (root / "samples" / "step_00000002" / "00_clip.wav").stat().st_size
    text = write_report(root, embed_limit=one + 10).read_text()  # room for one WAV
    assert text.count("src='data:audio/wav;base64,") == 1
    assert text.count("src='samples/step_00000002/") == 2
    assert "2 WAVs past the page's" in text and "beside the run folder" in text


@pytest.mark.parametrize("values", [[1e-9, 1.0000001e-9], [0.0, 0.0], [-3.2, -3.2000001]])
def test_tiny_zero_and_negative_series_draw(values):
    r = Record(vals=[{"step": i + 1, "value": v} for i, v in enumerate(values)])
    ax = axes_after_draw(FIGURES["validation"](r))
    assert ax.yaxis.get_major_formatter().get_offset() == ""
    low, high = ax.get_ylim()
    assert low <= min(values) and high >= max(values)


def test_tensorboard_text_of_s1_samples_without_an_s2_says_why():
    from trainer.tensorboard import text

    note = "s1 samples need an s2 checkpoint: pass --s2 PATH (an s2 run's export/generator.pt)"
    assert text({"kind": "samples", "step": 4, "folder": None, "files": [], "note": note}) == ("samples", f"step 4: no samples: {note}")
    made = text({"kind": "samples", "step": 4, "folder": "samples/step_00000004", "files": ["a.wav", "a.ref.wav"], "note": "quiet"})
    assert made == ("samples", "step 4: samples/step_00000004 (2 files; quiet)")
