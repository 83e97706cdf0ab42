"""examples/diffusers_monitor.py, as a user would run it: a plain diffusers loop that raydiff's
memorization monitor stops at onset. The verdict is on the work, never on the clock: the run is
bounded in steps (--steps) and must stop at onset within them; the time limit only guards against a
hang, far above any honest run (about a minute here on an idle 2-core machine, 2026-12-06)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from paths import ROOT

EXAMPLE = ROOT / "examples" / "diffusers_monitor.py"


def test_the_example_is_short():
    assert len(EXAMPLE.read_text().splitlines()) < 100


MAX_STEPS = 3000  # the work's bound: the onset comes well inside it
HANG_GUARD_S = 1800  # not a verdict: a busy machine may take minutes, a hang never ends


@pytest.mark.timeout(HANG_GUARD_S + 60)
def test_the_diffusers_example_stops_at_memorization_onset(tmp_path):
    pytest.importorskip("diffusers")
    # one thread: torch's threads spin-wait for each other, and on a machine busy with other work
    # that costs them more than they gain (no progress in 15 min, 2026-12-06; one thread: steps)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--n", "16", "--steps", str(MAX_STEPS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("memorization onset"))
    onset = re.fullmatch(r"memorization onset at step (\d+): stopping", lines[at])
    assert onset, proc.stdout
    # then the ledger: the training images copied, each with its first step (by the onset) and copies
    copied = re.fullmatch(r"training images copied: (\d+) of 16", lines[at + 1])
    assert copied and int(copied.group(1)) >= 1, proc.stdout
    assert lines[at + 2].split() == ["image", "first_step", "copies"]
    table = [[int(v) for v in ln.split()] for ln in lines[at + 3 :]]
    # first copied by the stop: the onset's evaluation, or the `patience` ones after it that confirm it
    stop = max(int(m.group(1)) for ln in lines if (m := re.match(r"step\s+(\d+)\s", ln)))
    assert len(table) == int(copied.group(1)) and all(0 <= i < 16 and s <= stop and c >= 1 for i, s, c in table)
    fracs = [float(m.group(1)) for ln in lines if (m := re.search(r"f_mem (\S+) \[", ln))]
    assert fracs[0] < 0.1 <= fracs[-1] and fracs[-2] >= 0.1  # generalizing first; the onset confirmed (patience 2)
    assert int(onset.group(1)) < MAX_STEPS
