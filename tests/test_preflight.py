"""Preflight, then write: every refusal of `advisor train` leaves RUN_DIR byte-identical.

Real processes (`python -m advisor train ...`), real runs (tiny s1 on the demo dataset),
real GPT-SoVITS-format files; each refusal is checked for exit 2, one line naming the
problem and the flag that fixes it, and a RUN_DIR whose every file (names, bytes,
modes, mtimes) is what it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_here import advisor_here
from gptsovits_data import write_experiment, write_s1_ckpt
from train_data import demo_dataset

from advisor.errors import UserError
from advisor.preflight import check_disk, disk_needed

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def advisor(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def snapshot(folder: Path) -> dict:
    """Every entry under `folder`: relative name -> (mode, mtime_ns, sha256 of a file's bytes)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        out[str(path.relative_to(folder))] = (st.st_mode, st.st_mtime_ns, digest)
    return out


def refused(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The one error line of a refusal (exit 2), checked to contain every needle."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory, dataset):
    """Another dataset: 3 of the demo's clips."""
    from trainer.data.dataset import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("small")
    listed = json.loads((dataset / "manifest.json").read_text())["list"]["path"]
    lines = Path(listed).read_text(encoding="utf-8").splitlines()[:3]
    short = Path(listed).parent / "three.list"
    short.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare(PrepareConfig(list_path=short, out=root / "ds3", slice_seconds=6.0))
    return root / "ds3"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, dataset):
    """A finished tiny s1 run (1 epoch); tests copy it before changing anything."""
    run = tmp_path_factory.mktemp("finished") / "run"
    done = advisor("train", "--workload", "s1", "--data", str(dataset), "--out", str(run), "--size", "tiny", "--epochs", "1", "--no-supervisor")
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


IDENTITY_CHANGES = [
    (["--size", "full"], ["size is tiny", "--size tiny"]),
    (["--workload", "s2"], ["workload is s1", "--workload s1"]),
    (["--recipe", "gpt-sovits"], ["recipe is advisor", "--recipe advisor"]),
    (["--version", "v2"], ["version is v2Pro", "--version v2Pro"]),
]


def test_a_resume_that_changes_the_runs_identity_is_refused_and_changes_nothing(run):
    before = snapshot(run)
    for flags, needles in IDENTITY_CHANGES:
        refused(advisor_here("train", "--out", str(run), "--resume", *flags, "--no-supervisor"), *needles)
        assert snapshot(run) == before, flags
    assert advisor("train", "--out", str(run), "--resume", "--no-supervisor").returncode == 0  # still resumable as it was


def test_a_resume_on_another_dataset_is_refused_naming_the_runs_dataset(run, small_dataset, dataset):
    before = snapshot(run)
    line = refused(advisor_here("train", "--out", str(run), "--resume", "--data", str(small_dataset), "--epochs", "5", "--no-supervisor"),
                   "is not this run's dataset", f"--data {dataset}")
    assert str(small_dataset) in line
    assert snapshot(run) == before


def test_a_live_run_refuses_resume_and_detach_with_the_real_reason(run):
    """A real process holds the run's lock as a supervisor does; --resume --detach says so, and
    the live run's supervisor.log is not written to."""
    (run / "supervisor.log").write_text("the live run's own log line\n")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from advisor.supervisor import RunLock; lock = RunLock(sys.argv[1]); lock.acquire(); "
        "print('held', flush=True); time.sleep(120)"), str(run)], stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        line = refused(advisor_here("train", "--out", str(run), "--resume", "--detach"), "is live", f"advisor stop {run}")
        assert "live run's own log line" not in line
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_gpt_sovits_root_that_is_not_the_checkout_root_is_refused_before_anything_is_made(dataset, tmp_path):
    checkout = tmp_path / "GPT-SoVITS"
    (checkout / "GPT_SoVITS").mkdir(parents=True)
    (checkout / "webui.py").write_text("# GPT-SoVITS's webui\n")
    (checkout / "GPT_SoVITS" / "s1_train.py").write_text("# its s1 trainer\n")
    base = ["train", "--workload", "s1", "--data", str(dataset), "--out", str(tmp_path / "run"), "--size", "tiny", "--no-supervisor"]
    before = snapshot(checkout)
    refused(advisor_here(*base, "--gpt-sovits-root", str(checkout / "GPT_SoVITS")), "inner GPT_SoVITS/", f"--gpt-sovits-root {checkout}")
    refused(advisor_here(*base, "--gpt-sovits-root", str(tmp_path / "missing")), "not a folder", "webui.py")
    assert not (tmp_path / "run").exists() and snapshot(checkout) == before


def test_a_resume_with_a_wrong_gpt_sovits_root_changes_nothing(run, tmp_path):
    inner = tmp_path / "GPT-SoVITS" / "GPT_SoVITS"
    inner.mkdir(parents=True)
    (inner.parent / "webui.py").write_text("# GPT-SoVITS's webui\n")
    before = snapshot(run)
    refused(advisor_here("train", "--out", str(run), "--resume", "--gpt-sovits-root", str(inner), "--no-supervisor"),
            f"--gpt-sovits-root {inner.parent}")
    assert snapshot(run) == before


def test_init_files_are_named_by_what_they_are(dataset, tmp_path):
    from test_s2_gptsovits import save, tiny_states

    s1 = tmp_path / "s1v3.ckpt"
    write_s1_ckpt(s1, size="tiny")
    g, d = tiny_states("v2")
    s2g, s2d = save({"weight": g}, tmp_path / "s2G2333k.pth"), save({"weight": d}, tmp_path / "s2D2333k.pth")
    script = tmp_path / "notes.py"
    script.write_text("print('not weights')\n")
    out = tmp_path / "run"

    def train(workload: str, *extra: str) -> subprocess.CompletedProcess:
        return advisor_here("train", "--workload", workload, "--data", str(dataset), "--out", str(out), "--size", "tiny", "--no-supervisor", *extra)

    refused(train("s2", "--init", str(s1), "--version", "v2"), f"{s1}: an s1 GPT file", "--workload s2 needs a SoVITS G file (s2G*.pth")
    refused(train("s1", "--init", str(s2g)), "a v2 SoVITS G file", "--workload s1 needs a GPT-SoVITS s1 GPT file")
    refused(train("s1", "--init", str(script)), "not a weights file", "not a torch file")
    refused(train("s2", "--init", str(s2d)), "a v2 SoVITS D file", "--workload s2 needs a SoVITS G file")
    refused(train("s2", "--init", str(s2g), "--version", "v2Pro"), "a v2 SoVITS G file", "--version v2")
    assert not out.exists()


def test_version_follows_the_init_file_when_not_given(dataset, tmp_path):
    from test_s2_gptsovits import save, tiny_states

    g, _ = tiny_states("v2")
    init = save({"weight": g}, tmp_path / "s2G2333k.pth")
    shown = advisor_here("train", "--workload", "s2", "--data", str(dataset), "--out", str(tmp_path / "run"), "--size", "tiny",
                       "--init", str(init), "--print-config")
    assert shown.returncode == 0, shown.stderr
    assert f"version: v2 (from --init {init}, a v2 SoVITS G file (GPT-SoVITS pretrained)" in shown.stderr
    assert "\nversion: v2  #" in shown.stdout and not (tmp_path / "run").exists()


def test_a_v2_experiment_folder_cannot_train_v2pro_and_says_so_at_preflight(tmp_path):
    exp = tmp_path / "logs" / "myvoice"
    write_experiment(exp, n=6, sv=False)
    shutil.rmtree(exp / "7-sv_cn")
    made = advisor_here("prepare", "--from-gpt-sovits", str(exp), str(tmp_path / "ds"), "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["versions"] == ["v2"]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["versions"] == ["v2"]
    out = tmp_path / "runs" / "v"
    refused(advisor_here("train", "--workload", "s2", "--data", str(tmp_path / "ds"), "--out", str(out), "--size", "tiny", "--version", "v2Pro", "--no-supervisor"),
            "--version v2Pro", "no 7-sv_cn/", "pass --version v2")
    assert not out.exists() and not out.parent.exists()


def test_resume_needs_no_init_file_and_works_from_another_folder(dataset, tmp_path):
    """The init file is needed only to start: moved away, a plain --resume from elsewhere works;
    --set init=relative/path is stored absolute."""
    (tmp_path / "models").mkdir()
    write_s1_ckpt(tmp_path / "models" / "s1v3.ckpt", size="tiny")
    run = tmp_path / "runs" / "v"
    first = advisor("train", "--workload", "s1", "--data", str(dataset), "--out", "runs/v", "--size", "tiny", "--max-steps", "2",
                    "--set", "init=models/s1v3.ckpt", "--no-supervisor", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = (run / "config.yaml").read_text()
    assert f"init: {tmp_path / 'models' / 's1v3.ckpt'}" in saved
    (tmp_path / "models" / "s1v3.ckpt").rename(tmp_path / "moved.ckpt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = advisor("train", "--out", str(run), "--resume", "--no-supervisor", cwd=elsewhere)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [e["kind"] for e in events(run)].count("start") == 2 and events(run)[-1]["kind"] == "end"
    # stopped 2 steps into its first epoch: named as GPT-SoVITS names epoch 1's weights (it counts from 1)
    assert [p.name for p in (run / "export" / "GPT_weights_v2Pro").iterdir()] == ["v-e1.ckpt"]
    write_s1_ckpt(tmp_path / "other.ckpt", size="tiny", seed=1)
    before = snapshot(run)
    refused(advisor_here("train", "--out", str(run), "--resume", "--init", str(tmp_path / "other.ckpt"), "--no-supervisor"),
            "is not the file this run started from", "leave --init out")
    assert snapshot(run) == before


def test_a_longer_resume_re_plans_the_lr_without_a_jump(run):
    before = [max(e["lr"].values()) for e in events(run) if e["kind"] == "step"]
    longer = advisor("train", "--out", str(run), "--resume", "--epochs", "2", "--no-supervisor")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "re-plan: --epochs 1 -> 2" in longer.stdout
    resume = next(e for e in events(run) if e["kind"] == "resume")
    assert resume["replan"]["total_steps"][0] < resume["replan"]["total_steps"][1]
    after = [max(e["lr"].values()) for e in events(run) if e["kind"] == "step"][len(before):]
    assert after and all(lr <= before[-1] + 1e-12 for lr in after)  # never above where it was


def test_too_little_disk_is_refused_naming_the_fix(tmp_path):
    assert disk_needed(1000, 3) == int((12 * 6 + 6) * 1000 * 1.1)  # 3 kept + best + latest finite + one being written, + export
    check_disk(tmp_path / "run", 1000, 3, free=10**9)
    with pytest.raises(UserError, match="checkpoint.keep_last=1"):
        check_disk(tmp_path / "run", 10**8, 3, free=10**9)
    assert not (tmp_path / "run").exists()


def test_ctrl_c_is_logged_as_sigint_and_the_end_says_how_to_resume(dataset, tmp_path):
    import signal
    import time

    from trainer.atomic import current_umask

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "advisor", "train", "--workload", "s1", "--data", str(dataset), "--out", str(run),
                             "--size", "tiny", "--epochs", "30", "--set", "watchdog.early_stop=null", "--no-dashboard"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "events.jsonl").is_file() and sum(e["kind"] == "step" for e in events(run)) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-2000:]
    end = [e for e in events(run) if e["kind"] == "end"][-1]
    assert end["reason"] == "stopped" and "SIGINT received (Ctrl-C)" in end["detail"] and "SIGTERM" not in end["detail"]
    assert f"continue it with: advisor train --out {run} --resume" in out
    mode = 0o666 & ~current_umask()
    assert (run / "config.yaml").stat().st_mode & 0o777 == mode  # as open() makes files, not mkstemp's 0600
    assert advisor("report", str(run)).returncode == 0
    assert (run / "report.html").stat().st_mode & 0o777 == mode
    stopped = advisor("stop", str(run))
    assert stopped.returncode == 0 and f"{run}: not running: stopped (stopped: stop_request: SIGINT received" in stopped.stdout


def test_stop_on_a_finished_run_says_it_finished_and_when(run):
    said = advisor("stop", str(run))
    assert said.returncode == 0 and "not running: finished (epochs) at step" in said.stdout and "UTC" in said.stdout


def test_gpt_sovits_epoch_numbers_start_at_one():
    from trainer.gptsovits import upstream_epoch

    assert [upstream_epoch(e) for e in (0, 1, 2, 7)] == [1, 1, 2, 7]


def test_a_hand_edited_config_meets_the_checkpoints_identity(run):
    """torchrun starts `advisor.child` on config.yaml as it is: the checkpoint names what it was."""
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("recipe: advisor", "recipe: gpt-sovits", 1))
    child = subprocess.run([sys.executable, "-m", "advisor.child", str(run), "--quiet"], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert child.returncode == 2, child.stderr[-2000:]
    assert "the checkpoint's recipe is advisor, the config says gpt-sovits" in child.stderr and "--recipe advisor" in child.stderr
