"""The per-sample memorization ledger: which training image each generated sample is nearest to,
by each memorization test, at each evaluation.

    <storage>/<sweep>/samples/<trial>/<step, 12 digits>.parquet   one row per sample of one evaluation
    <storage>/<sweep>/samples/<trial>/budget.json                 evaluations left out by the byte budget

An evaluation puts its ledger into its report under `LEDGER_KEY` (`evaluation.ledger` builds it from the
tests' verdicts); the results callback turns it into rows (`ledger_rows`) and `SamplesWriter`
writes them. A file per evaluation keeps each report's write small (a trial's ledger grows by
S rows an evaluation, too many to rewrite whole at every report as metrics/ is). Files are
written like the metrics (results.write_atomic: whole or not at all) and keyed by (trial, step)
in their names: an evaluation reported again replaces its file, and a trial restarted from a
checkpoint, which re-reports from that step, has the files of later steps removed, so no row is
ever duplicated. Each trial's files are bounded by a byte budget (`BUDGET_BYTES`): an evaluation
whose file would pass it is not written, and budget.json records it (step, rows, bytes).

Columns: trial_id, step, sample (index of the sample within the evaluation: the same initial
noise at every evaluation), then per memorization test of the registry `nearest_<test>`
(its nearest training image, index into the training set), `score_<test>` (what it thresholds:
the distance ratio for pixel, the best cosine for a cosine test) and `copied_<test>` (its
verdict). A test that did not run leaves its columns null.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydiff import measures, results

SAMPLES_DIR = "samples"
BUDGET_FILE = "budget.json"
LEDGER_KEY = "ledger"  # the report's key: {"step": int, "sample": [...], "nearest_<test>": [...], …}
# bytes of ledger files per trial. A row of the pixel test alone is ~6 B compressed, with four
# tests ~25 B: 64 MiB holds ~2.5 M rows, e.g. 1,024 samples at each of ~2,500 evaluations.
BUDGET_BYTES = 64 * 2**20
FIELDS = ("nearest", "score", "copied")
FIELD_TYPES = {"nearest": pa.int64(), "score": pa.float64(), "copied": pa.bool_()}


def tests() -> tuple[str, ...]:
    """The memorization tests the ledger has columns for: the registry's, in its order."""
    return measures.names("memorization")


def column(name: str, test: str) -> str:
    """`nearest_pixel`, `score_dinov2`, `copied_clip`, …"""
    return f"{name}_{test}"


def samples_schema() -> pa.Schema:
    cols = [("trial_id", pa.string()), ("step", pa.int64()), ("sample", pa.int64())]
    cols += [(column(f, t), FIELD_TYPES[f]) for t in tests() for f in FIELDS]
    return pa.schema(cols)


def ledger_rows(trial_id: str, report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per sample of the report's ledger ([] when the report has none). The step may be
    one number or a list with the same value for every sample; lists may arrive as tuples (Ray's
    report), and a ledger flattened by a logger ("ledger/<column>" keys) is read too. NaN scores
    become null."""
    led = report.get(LEDGER_KEY)
    if not led:
        prefix = LEDGER_KEY + "/"
        led = {k[len(prefix) :]: v for k, v in report.items() if k.startswith(prefix)}
    if not led:
        return []
    cols = {k: list(v) for k, v in led.items() if k != "step"}
    n = len(cols.get("sample", ()))
    step = led.get("step", report.get("step"))
    if isinstance(step, (list, tuple)):
        if len(step) != n or len(set(step)) > 1:
            raise ValueError("the ledger's step list must hold one step for every sample")
        step = step[0] if step else report.get("step")
    if step is None:
        raise ValueError("a ledger needs the evaluation's step")
    unknown = sorted(set(cols) - set(samples_schema().names))
    if unknown:
        raise ValueError(f"the ledger has columns of no registered memorization test: {', '.join(unknown)}")
    if any(len(v) != n for v in cols.values()):
        raise ValueError("the ledger's lists differ in length")
    rows = []
    for i in range(n):
        row = {"trial_id": trial_id, "step": int(step)}
        for k, v in cols.items():
            x = v[i]
            row[k] = None if isinstance(x, float) and x != x else x
        rows.append(row)
    return rows


def trial_dir(root: str, trial_id: str) -> str:
    return results.join(root, SAMPLES_DIR, trial_id)


def step_file(root: str, trial_id: str, step: int) -> str:
    return results.join(trial_dir(root, trial_id), f"{int(step):012d}.parquet")


@dataclass
class TrialFiles:
    """What one trial's folder holds: step → file size, and the budget's record."""

    sizes: dict[int, int] = field(default_factory=dict)
    dropped: dict[int, dict[str, int]] = field(default_factory=dict)  # step → {"rows", "bytes"}


class SamplesWriter:
    """Writes each reported ledger as samples/<trial>/<step>.parquet (see the module's doc).
    Stateless across processes: what a trial's folder holds is listed from the store the first
    time the trial reports, so a resumed sweep's new writer continues where the old one stopped."""

    def __init__(self, uri: str, metadata: Mapping[str, str] | None = None, budget_bytes: int = BUDGET_BYTES):
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be > 0 (got {budget_bytes})")
        self.uri, self.metadata, self.budget = uri, dict(metadata or {}), int(budget_bytes)
        self.files: dict[str, TrialFiles] = {}

    def __getstate__(self):  # what is written lives in the files
        state = self.__dict__.copy()
        state["files"] = {}
        return state

    def add(self, trial_id: str, report: Mapping[str, Any]) -> str | None:
        """Write the report's ledger; returns the file written (None: no ledger, or over budget)."""
        rows = ledger_rows(trial_id, report)
        if not rows:
            return None
        step = rows[0]["step"]
        fs, root = results.filesystem(self.uri)
        have = self._listed(fs, root, trial_id)
        # a trial restarted from a checkpoint re-reports from there: later steps' files are stale
        for s in sorted(s for s in have.sizes if s > step):
            fs.delete_file(step_file(root, trial_id, s))
            del have.sizes[s]
        stale_drops = [s for s in have.dropped if s >= step]
        for s in stale_drops:
            del have.dropped[s]
        buf = pa.BufferOutputStream()
        pq.write_table(results.table(rows, samples_schema(), self.metadata), buf, compression="zstd")
        data = buf.getvalue()
        used = sum(size for s, size in have.sizes.items() if s != step)
        path = step_file(root, trial_id, step)
        if used + data.size > self.budget:
            if step in have.sizes:  # an evaluation replaced by one that no longer fits: neither stands
                fs.delete_file(path)
                del have.sizes[step]
            have.dropped[step] = {"rows": len(rows), "bytes": int(data.size)}
            self._write_note(fs, root, trial_id, have)
            return None
        results.replace_file(fs, path, data)
        have.sizes[step] = int(data.size)
        if stale_drops:
            self._write_note(fs, root, trial_id, have)
        return path

    def _listed(self, fs: pafs.FileSystem, root: str, trial_id: str) -> TrialFiles:
        if trial_id not in self.files:
            self.files[trial_id] = read_trial_files(fs, root, trial_id)
        return self.files[trial_id]

    def _write_note(self, fs: pafs.FileSystem, root: str, trial_id: str, have: TrialFiles) -> None:
        note = {
            "budget_bytes": self.budget,
            "dropped": [{"step": s, **have.dropped[s]} for s in sorted(have.dropped)],
        }
        results.replace_file(fs, results.join(trial_dir(root, trial_id), BUDGET_FILE), json.dumps(note, indent=1).encode())


def read_trial_files(fs: pafs.FileSystem, root: str, trial_id: str) -> TrialFiles:
    """The steps a trial's ledger folder holds (with their sizes) and its budget record."""
    d = trial_dir(root, trial_id)
    out = TrialFiles()
    info = fs.get_file_info(d)
    if info.type != pafs.FileType.Directory:
        return out
    for i in fs.get_file_info(pafs.FileSelector(d)):
        stem = i.base_name.removesuffix(".parquet")
        if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and stem.isdigit():
            out.sizes[int(stem)] = int(i.size or 0)
    note = budget_note(fs, root, trial_id)
    out.dropped = {int(d["step"]): {"rows": int(d["rows"]), "bytes": int(d["bytes"])} for d in note.get("dropped", [])}
    return out


def budget_note(fs: pafs.FileSystem, root: str, trial_id: str) -> dict[str, Any]:
    """A trial's budget.json ({} when nothing was left out)."""
    path = results.join(trial_dir(root, trial_id), BUDGET_FILE)
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def ledger_trials(fs: pafs.FileSystem, root: str) -> list[str]:
    """Trials with a ledger folder under samples/."""
    d = results.join(root, SAMPLES_DIR)
    if fs.get_file_info(d).type != pafs.FileType.Directory:
        return []
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(d)) if i.type == pafs.FileType.Directory)


def read_samples(fs: pafs.FileSystem, root: str, trials: Sequence[str] | None = None, columns: list[str] | None = None) -> pa.Table:
    """The ledger rows of the given trials (default: all), sorted by (trial, step, sample), with
    every column of today's schema (a file from fewer registered tests gets nulls)."""
    schema = samples_schema()
    tables, meta = [], None
    for tid in trials if trials is not None else ledger_trials(fs, root):
        for step in sorted(read_trial_files(fs, root, tid).sizes):
            t = results.read_table(fs, step_file(root, tid, step))
            meta = meta or t.schema.metadata  # the provenance (versions, commit) of the first file
            cols = {n: (t.column(n).cast(schema.field(n).type) if n in t.column_names else pa.nulls(len(t), schema.field(n).type)) for n in schema.names}
            tables.append(pa.table(cols, schema=schema))
    if not tables:
        out = schema.empty_table()
    else:
        out = pa.concat_tables(tables).sort_by([("trial_id", "ascending"), ("step", "ascending"), ("sample", "ascending")])
        out = out.replace_schema_metadata(meta)
    return out.select(columns) if columns else out


def first_copies(rows: Any, test: str) -> Any:
    """Per trial and training image that `test` saw copied: the first step a sample copied it,
    and how many samples did (over all evaluations). rows: a DataFrame of ledger rows.
    Returns a DataFrame [trial_id, image, first_step, copies], sorted by trial and first step."""
    import pandas as pd

    copied, nearest = column("copied", test), column("nearest", test)
    cols = ["trial_id", "image", "first_step", "copies"]
    if rows is None or len(rows) == 0 or copied not in rows:
        return pd.DataFrame(columns=cols)
    hit = rows[rows[copied].fillna(False).astype(bool)]
    if hit.empty:
        return pd.DataFrame(columns=cols)
    g = hit.groupby(["trial_id", nearest])["step"].agg(first_step="min", copies="size").reset_index()
    g = g.rename(columns={nearest: "image"}).astype({"image": "int64", "first_step": "int64", "copies": "int64"})
    return g.sort_values(["trial_id", "first_step", "image"]).reset_index(drop=True)[cols]


def copied_images(fs: pafs.FileSystem, root: str, trial_id: str) -> dict[str, int]:
    """How many distinct training images each test has called copied so far in a trial's ledger
    (tests that ran only); {} when the trial keeps no ledger."""
    have = read_trial_files(fs, root, trial_id)
    seen: dict[str, set[int]] = {}
    for step in sorted(have.sizes):
        t = results.read_table(fs, step_file(root, trial_id, step))
        for test in tests():
            copied, nearest = column("copied", test), column("nearest", test)
            if copied not in t.column_names or t.column(copied).null_count == len(t):
                continue
            flags, idx = t.column(copied).to_pylist(), t.column(nearest).to_pylist()
            seen.setdefault(test, set()).update(i for f, i in zip(flags, idx) if f)
    return {test: len(s) for test, s in seen.items()}
