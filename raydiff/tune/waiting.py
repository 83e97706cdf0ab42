"""A word when trials wait: which trials wait for what, and what the autoscaler says about it.

Ray queues a trial that no free node can host, and starts nodes for it if it may; a trial can
then wait minutes (a node booting) or forever (quota, no capacity in the zone) without a word.
`WaitingCallback` notices trials pending for longer than a minute and says why, from the
autoscaler's own status (the node types it is launching, launches that failed and their error),
on the sweep's output and in `<sweep>/waiting.json`, which `raydiff status` prints.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray import tune

from raydiff import results
from raydiff.results import WAITING_FILE


@dataclass(frozen=True)
class Launch:
    node_type: str
    count: int
    failed: bool
    details: str = ""


def waiting_message(waiting: dict[str, float], requests: dict[str, str], launches: list[Launch] | None) -> str:
    """One line: the trials waiting (and for how long), what they ask for, what the autoscaler does.
    `launches` None: the autoscaler's status could not be read (a fixed-size cluster)."""
    longest = max(waiting.values())
    asks = ", ".join(sorted(set(requests.get(t, "?") for t in waiting)))
    text = f"{len(waiting)} trial(s) waiting up to {longest:.0f} s for resources ({asks})"
    if launches is None:
        return text + ": no trial runs and no autoscaler answers: no node of this cluster can host them now"
    pending = [l for l in launches if not l.failed]
    failed = [l for l in launches if l.failed]
    parts = []
    if pending:
        parts.append("the autoscaler is starting " + ", ".join(f"{l.count}× {l.node_type}" for l in pending))
    if failed:
        parts.append("launches failed: " + "; ".join(f"{l.node_type}: {l.details or 'no reason given'}" for l in failed))
    if not parts:
        parts.append("the autoscaler starts nothing for them (every node type is at its max_workers, or none fits)")
    return f"{text}: {'; '.join(parts)}"


def autoscaler_launches() -> list[Launch] | None:
    """The autoscaler's pending and failed launches (None where it reports none: no autoscaler)."""
    try:
        import ray
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
    except Exception:  # noqa: BLE001 - no autoscaler v2 status (a local or fixed-size cluster)
        return None
    out = [Launch(l.ray_node_type_name or l.instance_type_name, l.count, False) for l in status.pending_launches]
    out += [Launch(l.ray_node_type_name or l.instance_type_name, l.count, True, l.details or "") for l in status.failed_launches]
    return out


class WaitingCallback(tune.Callback):
    def __init__(
        self, uri: str, out=None, after_s: float = 60.0, every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic, launches: Callable[[], list[Launch] | None] = autoscaler_launches,
    ):  # fmt: skip
        self.uri, self.after_s, self.every_s, self.clock, self.launches = uri, after_s, every_s, clock, launches
        self.out = out
        self.since: dict[str, float] = {}
        self.last_said: float | None = None
        self.file_written = False

    def __getstate__(self):  # pickled with the experiment: no stream, no clock, no waiting state
        state = self.__dict__.copy()
        state.update(out=None, clock=None, launches=None, since={}, last_said=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.clock, self.launches, self.out = time.monotonic, autoscaler_launches, sys.stdout

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        now = self.clock()
        pending = {t.trial_id: t for t in trials if t.status == "PENDING"}
        self.since = {tid: self.since.get(tid, now) for tid in pending}
        waiting = {tid: now - t0 for tid, t0 in self.since.items() if now - t0 >= self.after_s}
        if not waiting:
            if self.file_written:
                self._write(None)
            return
        if self.last_said is not None and now - self.last_said < self.every_s:
            return
        launches = self.launches()
        if launches is None and any(t.status == "RUNNING" for t in trials):
            return  # a fixed-size cluster that is busy: the trials are queued for their turn, not stuck
        self.last_said = now
        requests = {tid: _request_text(pending[tid]) for tid in waiting}
        message = waiting_message(waiting, requests, launches)
        print(f"raydiff: {message}", file=self.out or sys.stdout, flush=True)
        self._write({"message": message, "trials": sorted(waiting), "at": time.time()})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.file_written:  # nothing waits once the sweep is over
            self._write(None)

    def _write(self, payload: dict | None) -> None:
        fs, root = results.filesystem(self.uri)
        path = results.join(root, WAITING_FILE)
        try:
            if payload is None:
                fs.delete_file(path)
                self.file_written = False
            else:
                results.replace_file(fs, path, json.dumps(payload).encode())
                self.file_written = True
        except OSError:
            pass  # a status hint only: never fail a sweep over it


def _request_text(trial) -> str:
    try:
        need = trial.placement_group_factory.required_resources
    except AttributeError:
        return "?"
    return f"{need.get('CPU', 0):g} CPU, {need.get('GPU', 0):g} GPU"
