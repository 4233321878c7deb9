"""Every file the project reads back survives what a crash or a power cut leaves behind.

One table of cases: READERS (what file, which real command reads it, what a good
outcome is) x DAMAGES (truncate at several offsets, append NUL bytes, flip bytes,
replace with another format). Each case copies a shared source (a finished tiny
run, the demo dataset, a shipped VRAM table), damages one file, runs the command
and checks: no traceback (an exception other than the CLI's one-line ValueError
would fail the test with it), then either a one-line error naming the file (exit 2)
or a clean recovery that says what it skipped, and nothing lost: a resume
continues from the newest checkpoint that still verifies.

Commands run in-process through `advisor.cli.main` (the real parsing, reading and
error handling; no interpreter start-up per case); the issue's reproduction runs
as real processes with the supervisor. To add a reader (the GPT-SoVITS files of
the s1/s2 branches), add a `Reader` row: the source it copies, the file it
damages, the command and the check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from advisor.cli import main as advisor_main
from trainer.events import EventReader

from train_data import demo_dataset, one_thread  # noqa: F401 (fixture)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
LINK_ABOVE = 1 << 20  # bytes: larger files are hard-linked into a case's copy (damage never writes in place)


# --- damages: bytes -> bytes ---------------------------------------------------------------------


def truncate(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[: int(len(data) * fraction)]


def append_nul_line(data: bytes) -> bytes:
    return data + b"\x00" * 64 + b"\n"  # the reproduction


def append_nul_tail(data: bytes) -> bytes:
    return data + b"\x00" * 4096  # a zero-filled block after a power cut, no newline


def flip(data: bytes) -> bytes:
    out = bytearray(data)
    middle = len(out) // 2
    for i in range(middle, min(middle + 16, len(out))):
        out[i] ^= 0xFF
    return bytes(out)


def other_format(data: bytes) -> bytes:
    """Text files become a zip (what torch.save writes); binary files become JSON."""
    if data[:2] == b"PK":
        return json.dumps({"format": "something-else", "version": 7, "rows": [1, 2, 3]}).encode()
    return b"PK\x03\x04" + bytes(range(256)) * 8


DAMAGES = {
    "truncate-0": truncate(0.0),
    "truncate-third": truncate(1 / 3),
    "truncate-most": truncate(0.9),
    "nul-tail": append_nul_tail,
    "flip": flip,
    "other-format": other_format,
}


# --- shared sources (module scope: trained once) ------------------------------------------------


@pytest.fixture(scope="module")
def sources(tmp_path_factory, one_thread) -> dict[str, Path]:  # noqa: F811
    """A finished tiny s1 run with checkpoints at steps 0, 2 and 4, the demo dataset, a table."""
    dataset = demo_dataset(tmp_path_factory)
    base = tmp_path_factory.mktemp("damage-sources")
    run = base / "run"
    argv = ["train", "--workload", "s1", "--data", str(dataset), "--out", str(run), "--size", "tiny", "--epochs", "1",
            "--set", "checkpoint.every_steps=2", "--max-buckets", "0", "--no-supervisor", "--json"]  # 4 steps: 14 clips / 4
    assert advisor_main(argv) == 0
    steps = [c["step"] for c in json.loads((run / "manifest.json").read_text())["checkpoints"]]
    assert steps == [0, 2, 4], steps
    tables = base / "tables"
    tables.mkdir()
    shutil.copy(Path(__file__).parent.parent / "tables" / "community.yaml", tables / "community.yaml")
    demo = dataset.parent / "demo"  # demo_dataset's input: demo.list and wavs/
    listing = base / "list"
    listing.mkdir()
    shutil.copy(demo / "demo.list", listing / "demo.list")
    (listing / "wavs").symlink_to(demo / "wavs")
    copy_tree(dataset, listing / "ds")  # prepare's OUT: unchanged clips are reused, so a case takes well under a second
    return {"run": run, "dataset": dataset, "tables": tables, "list": listing, "gptsovits": gpt_sovits_files(base / "gptsovits")}


def gpt_sovits_files(root: Path) -> Path:
    """GPT-SoVITS's own files, in its formats (tests/gptsovits_data.py): an experiment folder
    (logs/voice), the dataset converted from it (ds), a tiny s1 .ckpt and tiny s2G/s2D .pth; v3/v4: `v3v4_files`."""
    import torch
    from gptsovits_data import write_experiment, write_s1_ckpt

    from trainer.workloads.s2 import S2Workload

    write_experiment(root / "logs" / "voice", n=6)
    assert advisor_main(["prepare", "--from-gpt-sovits", str(root / "logs" / "voice"), str(root / "ds"), "--json"]) == 0
    write_s1_ckpt(root / "s1v3.ckpt", size="tiny")
    models = S2Workload("tiny", version="v2Pro").build("cpu")
    torch.save({"weight": models["generator"].state_dict()}, root / "s2Gv2Pro.pth")
    torch.save({"weight": models["discriminator"].state_dict()}, root / "s2Dv2Pro.pth")
    v3v4_files(root)
    return root


def v3v4_files(root: Path) -> None:
    """v3/v4 s2's inputs under a GPT-SoVITS-like root: the v4 dataset (ds-v4), a tiny pretrained
    s2Gv4.pth where the webui keeps it, and a LoRA export in SoVITS_weights_v4/ (its base: that file)."""
    import torch

    from trainer.gptsovits import s2v3_files
    from trainer.sovits import lora
    from trainer.workloads.s2v3 import S2V3Workload

    assert advisor_main(["prepare", "--from-gpt-sovits", str(root / "logs" / "voice"), str(root / "ds-v4"), "--version", "v4", "--json"]) == 0
    workload = S2V3Workload("tiny", version="v4")
    model = workload.build("cpu")["generator"]
    pretrained = root / s2v3_files.PRETRAINED_PATH["v4"]
    pretrained.parent.mkdir(parents=True)
    plain = {lora.unwrapped_key(k): v.half() for k, v in model.state_dict().items() if not lora.LORA_KEY.search(k)}
    torch.save({"weight": plain, "config": {"model": {"version": "v4"}}}, pretrained)
    s2v3_files.write_lora_export(root, "voice", 1, 1, model.state_dict(), "v4", workload.config, workload.lora_rank)


def copy_tree(src: Path, dst: Path) -> Path:
    def copy(s: str, d: str) -> None:
        (os.link if os.path.getsize(s) > LINK_ABOVE else shutil.copy2)(s, d)

    shutil.copytree(src, dst, copy_function=copy)
    return dst


def damage_file(path: Path, how: Callable[[bytes], bytes]) -> None:
    data = how(path.read_bytes())
    path.unlink()  # a new inode: a hard-linked source stays whole
    path.write_bytes(data)


# --- running a command ----------------------------------------------------------------------------


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        return [line for line in self.err.strip().splitlines() if line]


def run_cli(capsys, *argv: str) -> Result:
    capsys.readouterr()
    rc = advisor_main([str(a) for a in argv])  # anything but a one-line error raises here, with its traceback
    captured = capsys.readouterr()
    return Result(rc, captured.out, captured.err)


def one_line_error(result: Result, names: str) -> None:
    lines = result.error_lines()
    assert result.rc == 2, (result.rc, result.err)
    assert len(lines) == 1 and "error:" in lines[0] and names in lines[0], result.err
    assert "Traceback" not in result.err


def events(run: Path) -> list[dict]:
    return EventReader(run / "events.jsonl").read()


# --- readers: copy, damage, run, check --------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """One file the project reads back: where it is in a source, and how to check a damaged copy."""

    name: str
    source: str  # key of `sources`
    file: str  # relative to the copied source
    check: Callable[["Case"], None]


@dataclass
class Case:
    capsys: object
    root: Path  # the damaged copy
    sources: dict[str, Path]
    damage: str


def check_events(case: Case) -> None:
    """The dashboard renders; damaged lines are reported once, on stderr, naming the file."""
    result = run_cli(case.capsys, "dashboard", case.root, "--once")
    assert result.rc == 0, result.err
    lines = result.error_lines()
    assert len(lines) <= 1 and all("events.jsonl" in line and "damaged line" in line for line in lines), result.err
    if case.damage in ("nul-tail", "flip", "other-format"):
        assert lines, "a damaged event log was read silently"
    if case.damage != "truncate-0" and case.damage != "other-format":
        assert "s1 (tiny)" in result.out  # the start event survived: the header shows the run


def check_run_manifest(case: Case) -> None:
    """A resume rebuilds an unreadable manifest from the checkpoint files, says so, and
    continues from the newest step (4): nothing lost."""
    result = run_cli(case.capsys, "train", "--out", case.root, "--resume", "--epochs", "1", "--no-supervisor", "--json")
    assert result.rc == 0, result.err
    recovered = [e for e in events(case.root) if e["kind"] == "recovered"]
    assert len(recovered) == 1 and "rebuilt from 3 checkpoint file(s)" in recovered[0]["action"], recovered
    assert [e for e in events(case.root) if e["kind"] == "resume"][-1]["from_step"] == 4
    assert (case.root / "manifest.json.damaged").is_file() != (case.damage == "lost")
    json.loads((case.root / "manifest.json").read_text())  # a readable manifest again


def check_checkpoint(case: Case) -> None:
    """The damaged newest checkpoint is skipped (and named); the run continues from step 2."""
    result = run_cli(case.capsys, "train", "--out", case.root, "--resume", "--epochs", "1", "--no-supervisor", "--json")
    assert result.rc == 0, result.err
    resume = [e for e in events(case.root) if e["kind"] == "resume"][-1]
    assert resume["from_step"] == 2, resume
    assert [s["file"] for s in resume["skipped"]] == ["checkpoints/step_00000004.pt"], resume


def check_run_config(case: Case) -> None:
    """The run's config.yaml is structured: refused in one line naming it."""
    one_line_error(run_cli(case.capsys, "train", "--out", case.root, "--resume", "--print-config"), "config.yaml")


def check_watchdog(case: Case) -> None:
    one_line_error(run_cli(case.capsys, "train", "--out", case.root, "--resume", "--print-config"), "watchdog.yaml")


def check_dataset_manifest(case: Case) -> None:
    one_line_error(run_cli(case.capsys, "train", "--workload", "s1", "--data", case.root, "--out", case.root.parent / "new",
                           "--size", "tiny", "--write-config"), "manifest.json")
    assert not (case.root.parent / "new").exists()  # nothing half-written


def check_clip(case: Case) -> None:
    """The loader refuses the clip in one line naming it, whatever the damage."""
    from trainer.data.loader import PreparedDataset

    manifest = json.loads((case.root / "manifest.json").read_text())
    clip = next(c for c in manifest["clips"] if "train" in c["splits"])
    with pytest.raises(ValueError) as caught:
        ds = PreparedDataset(case.root, "train")
        ds[ds.clips.index(clip)]
    message = str(caught.value)
    assert clip["file"] in message and "\n" not in message, message


def check_table(case: Case) -> None:
    """`advisor table show` refuses it in one line; `advisor plan` skips it with a warning and answers."""
    path = case.root / "community.yaml"
    show = run_cli(case.capsys, "table", "show", path)
    if show.rc == 0:  # a cut that left whole rows is a smaller, valid table
        assert case.damage.startswith("truncate"), show.out
    else:
        one_line_error(show, "community.yaml")
    os.environ["SOVITS_ADVISOR_TABLES"] = str(case.root)
    try:
        planned = run_cli(case.capsys, "plan", "--vram", "8GiB", "--workload", "s1", "--slice-seconds", "10",
                          "--precision", "fp16", "--no-estimate")
    finally:
        del os.environ["SOVITS_ADVISOR_TABLES"]
    assert planned.rc in (0, 1), planned.err
    if show.rc != 0:
        assert any("warning: skipped" in line and "community.yaml" in line for line in planned.error_lines()), planned.err


def check_list(case: Case) -> None:
    """`advisor prepare` (an accepted input): damaged lines are reported by number and skipped,
    the others' clips kept; a list with nothing usable is one line naming it."""
    lines = (case.sources["list"] / "demo.list").read_bytes().splitlines()
    result = run_cli(case.capsys, "prepare", case.root / "demo.list", case.root / "ds", "--slice-seconds", "6", "--json")
    if result.rc == 2:
        one_line_error(result, "demo.list")
        assert case.damage in ("truncate-0", "other-format"), result.err
        return
    assert result.rc == 0, result.err
    summary = json.loads(result.out)
    intact = (case.root / "demo.list").read_bytes().splitlines()
    kept = sum(1 for line in intact if line in lines)  # lines that survived whole
    assert summary["counts"]["used"] == kept, summary["counts"]
    assert summary["counts"]["used"] + len(summary["problems"]) == summary["counts"]["lines"]


def check_lock(case: Case) -> None:
    """`advisor stop` on a finished run whose lock file is damaged: not running (the flock decides)."""
    result = run_cli(case.capsys, "stop", case.root, "--json")
    assert result.rc == 0, result.err
    assert json.loads(result.out)["state"] == "not running"


def loads_or_one_line(result: Result, names: str) -> None:
    """A weights file: either it still loads (a zip reader finds its directory past a NUL tail:
    the data is intact) or the command refuses it in one line naming it."""
    if result.rc == 0:
        return
    one_line_error(result, names)


def check_s1_init(case: Case) -> None:
    """`advisor train --init` on GPT-SoVITS's s1 .ckpt: preflight reads it before anything is written."""
    result = run_cli(case.capsys, "train", "--workload", "s1", "--data", case.root / "ds", "--out", case.root / "run",
                     "--size", "tiny", "--init", case.root / "s1v3.ckpt", "--write-config")
    loads_or_one_line(result, "s1v3.ckpt")
    assert result.rc == 0 or not (case.root / "run" / "config.yaml").exists()


def check_s2_init(case: Case) -> None:
    """`advisor train --workload s2 --init` on GPT-SoVITS's pretrained s2G (and the s2D beside it)."""
    result = run_cli(case.capsys, "train", "--workload", "s2", "--version", "v2Pro", "--data", case.root / "ds",
                     "--out", case.root / "run", "--size", "tiny", "--init", case.root / "s2Gv2Pro.pth", "--write-config")
    loads_or_one_line(result, "s2Gv2Pro.pth")


def check_v4_init(case: Case, init: str) -> None:
    """`advisor train --workload s2 --version v4 --init` on s2Gv4.pth or a LoRA export (over that base)."""
    result = run_cli(case.capsys, "train", "--workload", "s2", "--version", "v4", "--data", case.root / "ds-v4",
                     "--out", case.root / "run", "--size", "tiny", "--init", case.root / init, "--write-config")
    loads_or_one_line(result, Path(init).name)
    assert result.rc == 0 or not (case.root / "run" / "config.yaml").exists()


def check_experiment_index(case: Case, name: str) -> Callable[[], None]:
    """`advisor prepare --from-gpt-sovits`: a damaged index file is one line naming it, or its
    damaged lines are reported and skipped and the rest converted."""
    result = run_cli(case.capsys, "prepare", "--from-gpt-sovits", case.root / "logs" / "voice", case.root / "out", "--json")
    if result.rc == 2:
        one_line_error(result, name)
        return
    assert result.rc == 0, result.err
    summary = json.loads(result.out)
    assert 1 <= summary["counts"]["used"] <= 6 and summary["counts"]["used"] + len(summary["skipped"]) >= 6  # every item used or reported


def clip_file(root: Path) -> str:
    manifest = json.loads((root / "manifest.json").read_text())
    return next(c for c in manifest["clips"] if "train" in c["splits"])["file"]


READERS = [
    Reader("events", "run", "events.jsonl", check_events),
    Reader("run-manifest", "run", "manifest.json", check_run_manifest),
    Reader("checkpoint", "run", "checkpoints/step_00000004.pt", check_checkpoint),
    Reader("run-config", "run", "config.yaml", check_run_config),
    Reader("watchdog", "run", "watchdog.yaml", check_watchdog),
    Reader("dataset-manifest", "dataset", "manifest.json", check_dataset_manifest),
    Reader("clip", "dataset", "<clip>", check_clip),
    Reader("vram-table", "tables", "community.yaml", check_table),
    Reader("list", "list", "demo.list", check_list),
    Reader("lock", "run", "supervisor.lock", check_lock),
    Reader("gpt-sovits-s1-ckpt", "gptsovits", "s1v3.ckpt", check_s1_init),
    Reader("gpt-sovits-s2G", "gptsovits", "s2Gv2Pro.pth", check_s2_init),
    Reader("gpt-sovits-s2Gv4", "gptsovits", "GPT_SoVITS/pretrained_models/gsv-v4-pretrained/s2Gv4.pth",
           lambda c: check_v4_init(c, "GPT_SoVITS/pretrained_models/gsv-v4-pretrained/s2Gv4.pth")),
    Reader("gpt-sovits-s2v4-lora", "gptsovits", "SoVITS_weights_v4/voice_e1_s1_l32.pth",
           lambda c: check_v4_init(c, "SoVITS_weights_v4/voice_e1_s1_l32.pth")),
    Reader("gpt-sovits-name2text", "gptsovits", "logs/voice/2-name2text.txt", lambda c: check_experiment_index(c, "2-name2text.txt")),
    Reader("gpt-sovits-name2semantic", "gptsovits", "logs/voice/6-name2semantic.tsv", lambda c: check_experiment_index(c, "6-name2semantic.tsv")),
]


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("reader", READERS, ids=[r.name for r in READERS])
def test_a_damaged_file_gives_one_line_or_a_clean_recovery(reader, damage, sources, tmp_path, capsys, one_thread):  # noqa: F811
    root = copy_tree(sources[reader.source], tmp_path / reader.source)
    target = root / (clip_file(root) if reader.file == "<clip>" else reader.file)
    damage_file(target, DAMAGES[damage])
    reader.check(Case(capsys, root, sources, damage))


def test_a_lost_run_manifest_is_rebuilt_from_the_checkpoint_files(sources, tmp_path, capsys):
    root = copy_tree(sources["run"], tmp_path / "run")
    (root / "manifest.json").unlink()  # without the rebuild, clean() would delete every checkpoint as unlisted
    check_run_manifest(Case(capsys, root, sources, "lost"))


def test_the_event_reader_counts_a_damaged_tail_once_and_the_next_writer_starts_a_fresh_line(tmp_path):
    from trainer.events import EventLog, read_events

    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        log.write("start", 0)
        log.write("step", 1, losses={"total": 1.0})
    with open(path, "ab") as f:
        f.write(b'{"time": 1, "ki' + b"\x00" * 512)  # torn by a kill, then a zero-filled block
    reader = EventReader(path)
    assert [e["kind"] for e in reader.read()] == ["start", "step"]
    assert reader.damaged_count == 1 and "unfinished last line" in reader.damage_report()
    with EventLog(path) as log:  # a resumed trainer appends
        log.write("resume", 1)
    assert [e["kind"] for e in reader.read()] == ["resume"]  # not glued to the damaged tail
    assert reader.damaged_count == 1 and reader.damage_report().count("line 3") == 1  # the same line, counted once
    assert [e["kind"] for e in read_events(path)[0]] == ["start", "step", "resume"]  # the old API, same events


# --- the reproduction and the smaller findings -------------------------------------------------


def advisor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300)


def test_a_nul_line_in_a_finished_runs_events_renders_resumes_and_exits_0(sources, tmp_path):
    run = copy_tree(sources["run"], tmp_path / "run")
    lines = (run / "events.jsonl").read_bytes().count(b"\n")
    damage_file(run / "events.jsonl", append_nul_line)
    shown = advisor("dashboard", run, "--once")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.count("damaged line") == 1 and f"line {lines + 1}: NUL bytes" in shown.stderr, shown.stderr
    resumed = advisor("train", "--out", run, "--resume", "--epochs", "3")  # with the supervisor, as a user runs it
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "done (epochs) after 12 steps" in resumed.stdout
    ends = [e for e in events(run) if e["kind"] == "end"]
    assert [e["step"] for e in ends] == [4, 12]  # the old end event and the resumed run's: none swallowed


def test_the_exit_status_does_not_depend_on_the_event_log(sources, tmp_path):
    """A finished run whose event log is replaced by garbage while it trains still exits 0:
    the supervisor and the child decide from the trainer's own exit status."""
    run = copy_tree(sources["run"], tmp_path / "run")
    damage_file(run / "events.jsonl", other_format)
    resumed = advisor("train", "--out", run, "--resume", "--epochs", "1", "--json")  # nothing left to train: resume, export, end
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["reason"] == "epochs"


def test_a_negative_vram_is_one_line_naming_the_value(capsys):
    for argv in (["--vram", "-3GiB"], ["--vram=-3GiB"]):
        result = run_cli(capsys, "plan", *argv, "--workload", "s1", "--slice-seconds", "10")
        one_line_error(result, "'-3GiB'")
        assert "positive" in result.err and "--vram" in result.err


def test_a_bad_watchdog_value_in_a_config_file_names_file_line_and_field(sources, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(f"workload: s1\ndataset: {sources['dataset']}\nwatchdog:\n  oom:\n    mode: bogus\n")
    result = run_cli(capsys, "train", "--config", config, "--out", tmp_path / "run", "--size", "tiny", "--print-config")
    one_line_error(result, f"{config}:5: watchdog.oom.mode: expected one of accumulate, shrink, got 'bogus'")
