"""Test helper: run `python -m raydiff.cli` as a subprocess and track every process it starts.

Used by the fault and bad-input tests to prove that no Ray process a command started outlives it.
Linux only (reads /proc).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


class Command:
    """`python -m raydiff.cli ARGS` in its own session, with every process it ever starts
    (Ray's GCS, raylet, dashboard, workers) recorded by polling /proc until it exits."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None, log: str = "cmd"):
        self.out = tmp / f"{log}.out"
        self.err = tmp / f"{log}.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raydiff.cli", *args],
            stdout=self.out.open("w"), stderr=self.err.open("w"), cwd=tmp,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )  # fmt: skip
        self.seen: dict[int, int] = {}  # pid → start time (pids get reused)
        self._watch = threading.Thread(target=self._poll, daemon=True)
        self._watch.start()

    def _poll(self) -> None:
        while True:
            tree: dict[int, list[int]] = {}
            for d in os.listdir("/proc"):
                if d.isdigit() and (st := _stat(int(d))) is not None:
                    tree.setdefault(st[0], []).append(int(d))
            stack = [self.proc.pid]
            while stack:
                pid = stack.pop()
                if pid not in self.seen and (st := _stat(pid)) is not None:
                    self.seen[pid] = st[2]
                stack.extend(tree.get(pid, []))
            if self.proc.poll() is not None:
                return
            time.sleep(0.2)

    def wait(self, timeout: float = 300) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"command still running after {timeout} s:\n{self.log()}") from None
        self._watch.join()
        self.ended_at = time.monotonic()
        return rc

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.proc.pid, sig)

    def survivors(self) -> list[str]:
        out = []
        for pid, start in self.seen.items():
            st = _stat(pid)
            if st is not None and st[2] == start and st[1] not in "ZX":
                out.append(f"{pid} {_cmdline(pid)}")
        return out

    def assert_no_survivors(self, grace_s: float = 30.0, started_ray: bool = True) -> None:
        """No process this command started is still running `grace_s` after it ended (zombies
        waiting for a reaper count as gone). `started_ray`: the command started its own Ray (not
        one that joined a cluster with --address), so the tracker must have seen its processes."""
        deadline = self.ended_at + grace_s
        while (left := self.survivors()) and time.monotonic() < deadline:
            time.sleep(0.5)
        if left:
            for line in left:  # do not leak them into the rest of the suite
                try:
                    os.kill(int(line.split()[0]), signal.SIGKILL)
                except OSError:
                    pass
        assert not left, f"{len(left)} process(es) outlived the command:\n" + "\n".join(left)
        assert len(self.seen) > 1 or not started_ray  # the tracker did see Ray's processes

    def end_survivors(self, grace_s: float = 10.0) -> list[str]:
        """After a hard kill of the command: end what `ray stop` would, but only the processes this
        command started, by pid (SIGTERM, then SIGKILL after `grace_s`). Returns what was alive."""
        left = self.survivors()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for line in self.survivors():
                try:
                    os.kill(int(line.split()[0]), sig)
                except OSError:
                    pass
            deadline = time.monotonic() + grace_s
            while self.survivors() and time.monotonic() < deadline:
                time.sleep(0.2)
        assert not self.survivors(), self.survivors()
        return left

    def log(self) -> str:
        return f"--- stdout\n{self.out.read_text()[-3000:]}\n--- stderr\n{self.err.read_text()[-3000:]}"


def wait_for(pred, timeout: float, what: str, cmd: Command | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if cmd is not None and cmd.proc.poll() is not None:
            raise AssertionError(f"command ended (rc {cmd.proc.returncode}) before {what}:\n{cmd.log()}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{cmd.log()}" if cmd else ""))
