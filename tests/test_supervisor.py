"""The supervisor with real child processes: lock, restarts, back-off, shrink after a kill."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from advisor.supervisor import (
    EXIT_OOM,
    RestartPolicy,
    RunLock,
    RunLocked,
    Supervisor,
    describe_exit,
    lock_held,
    stop_run,
)
from trainer.events import read_events

NO_WAIT = RestartPolicy(max_restarts=3, backoff_s=0.0, max_backoff_s=0.0)


def child_script(tmp_path, body: str) -> list[str]:
    """A real child program; `attempt` counts its starts through a file."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, signal, time
        from pathlib import Path
        marker = Path({str(tmp_path / "attempts")!r})
        attempt = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(attempt))
    """) + textwrap.dedent(body))
    return [sys.executable, str(script)]


def hold_lock(run_dir) -> subprocess.Popen:
    code = f"from advisor.supervisor import RunLock; import time; RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_supervisor_on_a_live_run_is_refused(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        assert lock_held(tmp_path)
        with pytest.raises(RunLocked, match=f"supervisor pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert not lock_held(tmp_path)
    lock = RunLock(tmp_path)
    lock.acquire()  # a dead holder's stale lock file is taken over
    assert lock.holder()["supervisor_pid"] > 0
    lock.release()


def test_crashing_child_is_restarted_and_each_restart_is_an_event(tmp_path):
    argv = child_script(tmp_path, "sys.exit(0 if attempt == 3 else 1)")
    lock = RunLock(tmp_path)
    lock.acquire()
    outcome = Supervisor(tmp_path, lambda: argv, NO_WAIT, log=lambda line: None).run(lock)
    lock.release()
    assert outcome.returncode == 0 and outcome.restarts == 2
    events, _ = read_events(tmp_path / "events.jsonl")
    assert [e["kind"] for e in events] == ["restart", "restart"]
    assert [e["attempt"] for e in events] == [1, 2] and events[0]["reason"] == "exit code 1"


def test_retries_are_bounded(tmp_path):
    argv = child_script(tmp_path, "sys.exit(1)")
    lock = RunLock(tmp_path)
    lock.acquire()
    outcome = Supervisor(tmp_path, lambda: argv, RestartPolicy(max_restarts=2, backoff_s=0.0), log=lambda line: None).run(lock)
    lock.release()
    assert outcome.returncode == 1 and outcome.restarts == 2
    kinds = [e["kind"] for e in read_events(tmp_path / "events.jsonl")[0]]
    assert kinds == ["restart", "restart", "end"]


def test_bad_input_exit_is_not_retried(tmp_path):
    argv = child_script(tmp_path, "sys.exit(2)")
    lock = RunLock(tmp_path)
    lock.acquire()
    outcome = Supervisor(tmp_path, lambda: argv, NO_WAIT, log=lambda line: None).run(lock)
    lock.release()
    assert outcome.returncode == 2 and outcome.restarts == 0


def test_an_out_of_memory_death_changes_the_spec_before_the_restart(tmp_path):
    # attempt 1 kills itself with SIGKILL (what the OS OOM killer sends), attempt 2 exits 75 (OOM),
    # attempt 3 crashes otherwise (exit 1): only the first two are out-of-memory deaths
    body = "os.kill(os.getpid(), signal.SIGKILL) if attempt == 1 else sys.exit({2: 75, 3: 1}.get(attempt, 0))"
    argv = child_script(tmp_path, body)
    deaths = []

    def on_oom_death():
        deaths.append(len(deaths) + 1)
        return f"micro-batch cap {8 >> len(deaths)}"

    lock = RunLock(tmp_path)
    lock.acquire()
    outcome = Supervisor(tmp_path, lambda: argv, NO_WAIT, on_oom_death=on_oom_death, log=lambda line: None).run(lock)
    lock.release()
    assert outcome.returncode == 0 and outcome.restarts == 3
    assert deaths == [1, 2]
    restarts = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e.get("change") for e in restarts] == ["micro-batch cap 4", "micro-batch cap 2", None]
    assert describe_exit(-signal.SIGKILL).startswith("killed by SIGKILL") and describe_exit(EXIT_OOM) == "out of memory"


def test_does_not_fit_is_final(tmp_path):
    argv = child_script(tmp_path, "sys.exit(3)")
    lock = RunLock(tmp_path)
    lock.acquire()
    outcome = Supervisor(tmp_path, lambda: argv, NO_WAIT, log=lambda line: None).run(lock)
    lock.release()
    assert (outcome.returncode, outcome.restarts) == (3, 0)


def test_stop_forwards_sigterm_and_the_child_exits_cleanly(tmp_path):
    body = """
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        Path(marker.parent / "ready").write_text("1")
        while not stop:
            time.sleep(0.05)
        Path(marker.parent / "clean").write_text("1")
        sys.exit(0)
    """
    argv = child_script(tmp_path, body)
    runner = textwrap.dedent(f"""
        from advisor.supervisor import RunLock, Supervisor, RestartPolicy
        lock = RunLock({str(tmp_path)!r}); lock.acquire()
        out = Supervisor({str(tmp_path)!r}, lambda: {argv!r}, RestartPolicy(backoff_s=0.0)).run(lock)
        raise SystemExit(out.returncode)
    """)
    sup = subprocess.Popen([sys.executable, "-c", runner])
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline, "child never started"
        time.sleep(0.05)
    assert stop_run(tmp_path, timeout_s=30) == "stopped"
    assert sup.wait(timeout=30) == 0
    assert (tmp_path / "clean").exists()
    assert json.loads((tmp_path / "supervisor.lock").read_text())["supervisor_pid"] == sup.pid


def test_child_of_a_killed_supervisor_gets_sigterm(tmp_path):
    body = """
        signal.signal(signal.SIGTERM, lambda *a: (Path(marker.parent / "got_sigterm").write_text("1"), sys.exit(0)))
        Path(marker.parent / "ready").write_text("1")
        time.sleep(60)
    """
    argv = child_script(tmp_path, body)
    runner = textwrap.dedent(f"""
        from advisor.supervisor import RunLock, Supervisor
        lock = RunLock({str(tmp_path)!r}); lock.acquire()
        Supervisor({str(tmp_path)!r}, lambda: {argv!r}).run(lock)
    """)
    sup = subprocess.Popen([sys.executable, "-c", runner])
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline, "child never started"
        time.sleep(0.05)
    sup.kill()  # kill -9 the supervisor
    sup.wait()
    while not (tmp_path / "got_sigterm").exists():
        assert time.monotonic() < deadline, "orphaned child was not told to stop"
        time.sleep(0.05)
    lock = RunLock(tmp_path)
    lock.acquire(wait_s=30)  # takes over once the old trainer has exited
    lock.release()
