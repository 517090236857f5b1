"""Start, record and stop the background processes of a dev cluster.

Processes are detached (their own session) so that ``akv-devcluster up`` can
return while they keep running; each is recorded with its pid *and* its kernel
start time, so that ``down`` never signals an unrelated process that happens
to reuse a pid after a reboot or a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


class ProcessError(Exception):
    """A managed process failed to start or become ready; one-line message."""


@dataclass(frozen=True)
class ProcessSpec:
    """What to run: a name unique within the cluster, argv, extra environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class ProcessRecord:
    """A started process as persisted in the cluster's state file."""

    name: str
    pid: int
    start_time: int
    log_file: str
    argv: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "start_time": self.start_time,
            "log_file": self.log_file,
            "argv": list(self.argv),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            log_file=str(data["log_file"]),
            argv=tuple(str(a) for a in data.get("argv", [])),
        )


def process_start_time(pid: int) -> int | None:
    """Clock ticks since boot at which pid started (field 22 of /proc/pid/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; the
    # fields after the last ')' are fixed.
    rest = stat.rsplit(")", 1)[1].split()
    return int(rest[19])


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def is_alive(record: ProcessRecord) -> bool:
    started = process_start_time(record.pid)
    return started == record.start_time and not _is_zombie(record.pid)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to kill it when
    # the (test-runner) parent dies, even by SIGKILL. SIGKILL, not SIGTERM:
    # kube-apiserver ignores SIGTERM until its storage is up (it keeps trying
    # to reach an etcd that died with it), and a throwaway test control plane
    # has no state worth a graceful shutdown.
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessGroup:
    """The ordered list of processes a cluster runs; stopped in reverse order."""

    def __init__(
        self,
        log_dir: Path,
        on_change: Callable[[list[ProcessRecord]], None],
        records: Sequence[ProcessRecord] = (),
        *,
        die_with_parent: bool = False,
    ) -> None:
        self._log_dir = log_dir
        self._on_change = on_change
        self._records = list(records)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._die_with_parent = die_with_parent

    @property
    def records(self) -> list[ProcessRecord]:
        return list(self._records)

    def get(self, name: str) -> ProcessRecord | None:
        return next((r for r in self._records if r.name == name), None)

    def start(self, spec: ProcessSpec) -> ProcessRecord:
        if self.get(spec.name) is not None:
            raise ProcessError(f"a process named {spec.name!r} is already managed")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self._log_dir / f"{spec.name}.log"
        env = {**os.environ, **spec.env}
        with log_file.open("ab") as log:
            try:
                child = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if self._die_with_parent else None,
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {spec.name}: {exc}") from exc
        started = process_start_time(child.pid)
        if started is None:
            code = child.wait()
            raise ProcessError(f"{spec.name} exited at once (code {code}); see {log_file}")
        record = ProcessRecord(spec.name, child.pid, started, str(log_file), tuple(spec.argv))
        self._children[child.pid] = child
        self._records.append(record)
        self._on_change(self.records)
        return record

    def exit_code(self, record: ProcessRecord) -> int | None:
        """The exit code if the process has ended (None while it runs)."""
        child = self._children.get(record.pid)
        if child is not None:
            return child.poll()
        return None if is_alive(record) else -1

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        record = self.get(name)
        if record is None:
            return
        self._terminate(record, timeout)
        self._records.remove(record)
        self._on_change(self.records)

    def stop_all(self, *, timeout: float = 10.0) -> None:
        for record in reversed(self._records):
            self._terminate(record, timeout)
        self._records.clear()
        self._on_change(self.records)

    def _terminate(self, record: ProcessRecord, timeout: float) -> None:
        child = self._children.pop(record.pid, None)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not is_alive(record):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if child is not None and child.poll() is not None:
                    break
                if child is None and not is_alive(record):
                    break
                time.sleep(0.05)
        if child is not None:
            # Reap our own child so no zombie outlives the test session.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=timeout)


def tail(path: str | Path, lines: int = 5) -> str:
    """The last lines of a log file, joined on one line for error messages."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)
