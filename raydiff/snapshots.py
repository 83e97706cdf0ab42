"""EMA snapshots on the figure schedule: weights only, saved by a trial into the sweep's storage so
that its figures (FID, SWD: the fidelity measures of raydiff/measures) are measured off the
training loop — by `raydiff measure`, while the sweep runs or after it — and can be measured again
with another measure or protocol without retraining.

    <storage>/<sweep>/snapshots/<trial>/config.json        the trial's resolved config
    <storage>/<sweep>/snapshots/<trial>/<step:012d>.pt     a state_dict (torch.save), on the CPU
    <storage>/<sweep>/snapshots/<trial>/references/*.npz   the figures' reference features (ReferenceCache)

Each file is written whole (results.replace_file); a trial stops saving once its snapshots would
pass its byte budget (eval.snapshot_budget_mb), and says so in the file `budget.txt`.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pyarrow.fs as pafs
import torch

from raydiff import results
from raydiff.metrics.fid import Reference, Stats

SNAPSHOTS_DIR = "snapshots"
CONFIG_FILE = "config.json"
BUDGET_NOTE = "budget.txt"


def snapshot_name(step: int) -> str:
    return f"{step:012d}.pt"


class SnapshotStore:
    """One trial's snapshots under `<sweep uri>/snapshots/<trial_id>/`."""

    def __init__(self, uri: str, trial_id: str, budget_bytes: int | None = None):
        self.fs, root = results.filesystem(uri)
        self.dir = results.join(root, SNAPSHOTS_DIR, trial_id)
        self.budget = budget_bytes
        self.used = sum(i.size or 0 for i in self._files())  # a restored trial counts what it saved before
        self.full = self.fs.get_file_info(results.join(self.dir, BUDGET_NOTE)).type == pafs.FileType.File

    def _files(self) -> list[pafs.FileInfo]:
        info = self.fs.get_file_info(self.dir)
        if info.type == pafs.FileType.NotFound:
            return []
        return [i for i in self.fs.get_file_info(pafs.FileSelector(self.dir)) if i.base_name.endswith(".pt")]

    def save_config(self, config_json: str) -> None:
        results.replace_file(self.fs, results.join(self.dir, CONFIG_FILE), config_json.encode())

    def config_json(self) -> str | None:
        try:
            with self.fs.open_input_stream(results.join(self.dir, CONFIG_FILE)) as f:
                return f.read().decode()
        except (FileNotFoundError, OSError):
            return None

    def save(self, step: int, state_dict: dict[str, torch.Tensor]) -> bool:
        """Save one snapshot (False, and a note, when it would pass the byte budget)."""
        buf = io.BytesIO()
        torch.save({k: v.detach().to("cpu") for k, v in state_dict.items()}, buf)
        data = buf.getvalue()
        if self.full or (self.budget is not None and self.used + len(data) > self.budget):
            if not self.full:  # the first snapshot left out says why; none after it is saved
                note = f"snapshot at step {step} not saved, nor any after it: {self.used + len(data):,} bytes would pass the budget of {self.budget:,}\n"
                results.replace_file(self.fs, results.join(self.dir, BUDGET_NOTE), note.encode())
                self.full = True
            return False
        results.replace_file(self.fs, results.join(self.dir, snapshot_name(step)), data)
        self.used += len(data)
        return True

    def steps(self) -> list[int]:
        return sorted(int(i.base_name[:-3]) for i in self._files() if i.base_name[:-3].isdigit())

    def load(self, step: int) -> dict[str, torch.Tensor]:
        with self.fs.open_input_file(results.join(self.dir, snapshot_name(step))) as f:
            return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)

    def delete(self, step: int) -> None:
        self.fs.delete_file(results.join(self.dir, snapshot_name(step)))


class ReferenceCache:
    """The figures' reference features of one trial (metrics.fid.ReferenceCache), kept beside its
    snapshots: the measure tasks of a trial extract each split's features once, not once per task
    (`references/<key>.npz`: the moments and the SWD points; the key names the images' digest)."""

    def __init__(self, store: SnapshotStore):
        self.fs, self.dir = store.fs, results.join(store.dir, "references")

    def get(self, key: str) -> Reference | None:
        """The cached reference, or None: absent, or unreadable (it is then extracted and written
        again, whole)."""
        try:
            with self.fs.open_input_file(results.join(self.dir, key + ".npz")) as f:
                z = np.load(io.BytesIO(f.read()), allow_pickle=False)
            stats = Stats(z["mu"], z["sigma"], int(z["count"])) if "mu" in z.files else None
            return Reference(stats, z["points"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # FileNotFoundError is an OSError
            return None

    def put(self, key: str, ref: Reference) -> None:
        arrays = {"points": np.asarray(ref.points)}
        if ref.stats is not None:
            arrays.update(mu=ref.stats.mu, sigma=ref.stats.sigma, count=np.asarray(ref.stats.count))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        results.replace_file(self.fs, results.join(self.dir, key + ".npz"), buf.getvalue())


def trials_with_snapshots(uri: str) -> list[str]:
    fs, root = results.filesystem(uri)
    d = results.join(root, SNAPSHOTS_DIR)
    if fs.get_file_info(d).type != pafs.FileType.Directory:
        return []
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(d)) if i.type == pafs.FileType.Directory)
