"""Figures measured while the sweep runs: trials with eval.figures: snapshots save their EMA
weights on the figure schedule and name the steps in their next report (`snapshots`); this
callback measures them as Ray tasks with their own request (sweep.measure_resources), one task per
trial at a time, never blocking a trial (a task waits for free resources like any other). A task
that dies is retried by Ray; rows are written per snapshot, whole, so a retry leaves no half row.
At the sweep's end the driver waits for the tasks still running. Whatever a sweep left unmeasured
`raydiff measure` measures later, the same way (raydiff/remeasure.py)."""

from __future__ import annotations

import sys

import ray
from ray import tune

from raydiff.config import Resources
from raydiff.remeasure import measure_steps

RETRIES = 2


def _measure(uri: str, trial_id: str, steps: list[int], device: str) -> int:
    return measure_steps(uri, trial_id, steps, None, device)


class FigureCallback(tune.Callback):
    def __init__(self, uri: str, resources: Resources, out=None):
        self.uri, self.resources, self.out = uri, resources, out or sys.stdout
        self.pending: dict[str, list[int]] = {}  # trial → snapshot steps not yet handed to a task
        self.running: dict = {}  # ObjectRef → (trial, steps)
        self.failed: list[str] = []
        self.rows = 0

    def __getstate__(self):  # Tune pickles its callbacks with the experiment state: no task handles
        state = self.__dict__.copy()
        state.update(running={}, out=None)
        return state

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        steps = result.get("snapshots")
        if steps:
            self.pending.setdefault(trial.trial_id, []).extend(int(s) for s in steps)
        self._collect(wait=False)
        self._submit()

    def on_experiment_end(self, trials, **info) -> None:
        while self.pending or self.running:
            self._submit()
            self._collect(wait=True)
        if self.failed:
            print(f"raydiff: figures not measured for {', '.join(self.failed)}; `raydiff measure` measures them later", file=self.out or sys.stdout)

    def _submit(self) -> None:
        busy = {t for t, _ in self.running.values()}
        remote = ray.remote(_measure).options(
            num_cpus=self.resources.cpu, num_gpus=self.resources.gpu, resources=dict(self.resources.custom) or None,
            max_retries=RETRIES, retry_exceptions=False,
        )  # fmt: skip
        device = "cuda" if self.resources.gpu > 0 else "cpu"
        for trial_id in [t for t in self.pending if t not in busy]:
            steps = sorted(set(self.pending.pop(trial_id)))
            self.running[remote.remote(self.uri, trial_id, steps, device)] = (trial_id, steps)

    def _collect(self, wait: bool) -> None:
        if not self.running:
            return
        ready, _ = ray.wait(list(self.running), num_returns=1 if wait else len(self.running), timeout=None if wait else 0)
        for ref in ready:
            trial_id, steps = self.running.pop(ref)
            try:
                self.rows += ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a measure that failed is said, never a stopped sweep
                first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                print(f"raydiff: measuring {trial_id}'s snapshots {steps} failed: {first}", file=self.out or sys.stdout)
                self.failed.append(trial_id)
