"""The supervisor: runs the trainer as a child process and keeps the run alive.

    advisor train ──> Supervisor.run()
                        ├─ RunLock (RUN_DIR/supervisor.lock, flock): one trainer per run
                        └─ loop: start child (python -m advisor.child RUN_DIR)
                                 wait; exit 0 -> done
                                 exit 2 (bad config/data), 3 (does not fit) or a clean
                                 stop -> done, no retry
                                 crash / killed / CUDA error -> `restart` event, back-off,
                                 resume from the latest good checkpoint (after a kill
                                 by SIGKILL, the OS OOM killer's signal, or an OOM
                                 exit: `on_oom_death()` first, which halves the run
                                 specification's micro-batch cap)

The supervisor decides from the child's exit status alone; it never reads the
event log back (it only appends its own `restart` events while no child runs).

Signals: SIGINT/SIGTERM to the supervisor are forwarded to the child as
they came (so a Ctrl-C is logged as SIGINT); the child finishes its step,
checkpoints and exits 0. The child is
started with PR_SET_PDEATHSIG = SIGTERM, so a supervisor killed with -9 never
leaves an orphan trainer running on: the child stops cleanly by itself. The
child also inherits the lock's file descriptor, so the lock stays held until
the last trainer process of the run has exited; a new `advisor train
--resume` waits for that (the old supervisor being dead) and takes over.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from trainer import exits
from trainer.events import EventLog, read_events

LOCK_FILE = "supervisor.lock"
EXIT_OOM = exits.OOM  # the child ran out of memory at micro-batch 1 or outside the loop's recovery
FINAL = (exits.OK, exits.BAD_INPUT, exits.DOES_NOT_FIT)  # retrying cannot change these
PR_SET_PDEATHSIG = 1


class RunLocked(Exception):
    """Another live supervisor owns this run."""


@dataclass
class RunLock:
    """An exclusive flock on RUN_DIR/supervisor.lock, with the owner's pid inside."""

    run_dir: Path
    fd: int | None = None

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / LOCK_FILE

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.2) -> None:
        """Take the lock, waiting up to `wait_s` while only orphaned trainers hold it.

        Raises RunLocked at once if the holder's supervisor is alive."""
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self.holder()
                if holder and pid_alive(holder.get("supervisor_pid", -1)) or time.monotonic() >= deadline:
                    os.close(fd)
                    who = f"supervisor pid {holder['supervisor_pid']}" if holder else "another process"
                    raise RunLocked(f"run {self.run_dir} is live ({who} holds {self.path}); stop it with `advisor stop {self.run_dir}`") from None
                time.sleep(poll_s)  # the old supervisor is dead: its trainer is checkpointing and exiting
        self.fd = fd
        self.write_info(child_pid=None)

    def write_info(self, child_pid: int | None) -> None:
        info = {"supervisor_pid": os.getpid(), "child_pid": child_pid, "since": time.time()}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(self.fd)

    def holder(self) -> dict | None:
        """The lock file's {supervisor_pid, child_pid, since}; None if absent or damaged (not UTF-8,
        NUL bytes, not a JSON object: the flock, not this text, is what holds the run)."""
        try:
            info = json.loads(self.path.read_bytes().decode("utf-8") or "null")
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or not isinstance(info.get("supervisor_pid"), int) or not isinstance(info.get("child_pid"), (int, type(None))):
            return None
        return info

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the flock goes with the last descriptor (children may still hold one)
            self.fd = None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def read_lock_info(run_dir: Path) -> dict | None:
    return RunLock(Path(run_dir)).holder()


@dataclass(frozen=True)
class RestartPolicy:
    """Bounded retries with exponential back-off (seconds)."""

    max_restarts: int = 3
    backoff_s: float = 5.0  # first wait; doubles each restart
    max_backoff_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError(f"backoff_s must be in [0, max_backoff_s], got {self.backoff_s}")

    def wait_s(self, attempt: int) -> float:
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


@dataclass
class Outcome:
    returncode: int
    restarts: int = 0
    reasons: list[str] = field(default_factory=list)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (the OS OOM killer's signal, or kill -9)" if -returncode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    if returncode == EXIT_OOM:
        return "out of memory"
    return f"exit code {returncode}"


def _set_pdeathsig() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the lock still keeps a second trainer out


class Supervisor:
    """Start the child, restart it on crashes, forward stop signals.

    `command()` returns the child's argv. After an out-of-memory death the
    supervisor calls `on_oom_death()` before the restart: it changes the run's
    specification (a smaller micro-batch cap) and returns a description of the
    change for the restart event, or None if there is nothing smaller to try."""

    def __init__(
        self,
        run_dir: Path,
        command: Callable[[], list[str]],
        restart: RestartPolicy = RestartPolicy(),
        on_oom_death: Callable[[], str | None] = lambda: None,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
        output: IO | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.command = command
        self.restart = restart
        self.on_oom_death = on_oom_death
        self.log = log
        self.output = output  # the child's stdout and stderr (None: inherit the terminal)
        self.child: subprocess.Popen | None = None
        self.stopping = False

    def run(self, lock: RunLock) -> Outcome:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        outcome = Outcome(returncode=0)
        try:
            while True:
                rc = self._run_child(lock)
                outcome.returncode = rc
                if rc in FINAL or self.stopping:
                    return outcome
                reason = describe_exit(rc)
                outcome.reasons.append(reason)
                if outcome.restarts >= self.restart.max_restarts:
                    self._event("end", reason="supervisor_gave_up", detail=f"{reason}; {outcome.restarts} restarts used")
                    self.log(f"supervisor: trainer {reason}; giving up after {outcome.restarts} restarts")
                    return outcome
                outcome.restarts += 1
                change = self.on_oom_death() if rc in (-signal.SIGKILL, EXIT_OOM) else None
                wait = self.restart.wait_s(outcome.restarts)
                self._event("restart", attempt=outcome.restarts, reason=reason, change=change, wait_s=wait)
                self.log(f"supervisor: trainer {reason}; restart {outcome.restarts}/{self.restart.max_restarts} in {wait:g} s"
                         + (f" with {change}" if change else ""))
                if self._sleep(wait):
                    return outcome
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run_child(self, lock: RunLock) -> int:
        self.child = subprocess.Popen(
            self.command(),
            pass_fds=(lock.fd,),  # the lock lives as long as the trainer does
            preexec_fn=_set_pdeathsig,
            stdout=self.output,
            stderr=subprocess.STDOUT if self.output is not None else None,
        )
        lock.write_info(child_pid=self.child.pid)
        return self.child.wait()  # a stop signal meanwhile is forwarded by _on_signal

    def _on_signal(self, signum: int, frame) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)  # SIGINT or SIGTERM: the child checkpoints and exits 0

    def _sleep(self, seconds: float) -> bool:
        """Back-off that a stop signal interrupts; True if stopped."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(min(0.1, deadline - time.monotonic()))
        return self.stopping

    def _event(self, kind: str, **fields) -> None:
        """Supervisor events go to the same log, only while no child is writing to it."""
        step = last_step(self.run_dir / "events.jsonl")
        with EventLog(self.run_dir / "events.jsonl") as log:
            log.write(kind, step, source="supervisor", **fields)


def last_step(events_path: Path) -> int:
    events, _ = read_events(events_path)
    return max((int(e.get("step", 0)) for e in events), default=0)


def stop_run(run_dir: Path, timeout_s: float = 120.0) -> str:
    """Ask a run's supervisor (or orphaned trainer) to stop cleanly; wait for the lock to free."""
    info = read_lock_info(run_dir)
    if not info:
        if not (Path(run_dir) / LOCK_FILE).exists():
            raise ValueError(f"{run_dir} has no {LOCK_FILE}: it is not a run directory or never started")
        if not lock_held(run_dir):
            return "not running"
        raise ValueError(f"{Path(run_dir) / LOCK_FILE}: damaged (no pid inside), and a live process holds it: "
                         "stop that run's `advisor train` yourself (SIGTERM checkpoints and stops it)")
    target = next((pid for pid in (info.get("supervisor_pid"), info.get("child_pid")) if pid and pid_alive(pid)), None)
    if target is None:
        return "not running"
    os.kill(target, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not lock_held(run_dir):
            return "stopped"
        time.sleep(0.2)
    raise ValueError(f"{run_dir}: pid {target} did not stop within {timeout_s:g} s (it may still be writing a checkpoint)")


def lock_held(run_dir: Path) -> bool:
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe lock if we got it
    return False
