"""The results contract: Parquet schemas, atomic writers, readers.

    <storage>/<sweep>/trials.parquet      one row per finished trial
    <storage>/<sweep>/metrics/<trial>.parquet   one row per evaluation (together: a Parquet dataset)
    <storage>/<sweep>/metrics/<trial>.<step, 12 digits>.part.parquet   a running trial's rows, one a file

While a trial runs each evaluation's row goes into a part file of its own (a write per report
that does not grow with the trial's history); when the trial ends its rows are compacted into
metrics/<trial>.parquet and its parts deleted. Readers take both, a row of the compacted file
before a part's of the same (trial_id, step) (a reader may list the folder between the two).

Column names are a contract with other tools (docs/results.md); more columns are fine, renames are not.
Every file carries the search space, package versions and the git commit in its schema
metadata. A reader never sees half a file: on a local disk a file is written to a temporary name
and renamed; on an object store (S3, GCS) it is one PUT of the whole object, which is atomic per
object there (a rename would be a copy and a delete, and a crash between them leaves both).
Metric rows are keyed by (trial_id, step), so a restarted trial never duplicates a row.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydiff import measures
from raydiff.errors import UserError

TRIALS_FILE = "trials.parquet"
METRICS_DIR = "metrics"
PART_SUFFIX = ".part.parquet"  # metrics/<trial>.<step:012d>.part.parquet: one row of a running trial
FIGURES_DIR = "figures"  # figures/<trial>/<measure>/<step>.parquet: fidelity measures of snapshots (raydiff measure)
SPACE_FILE = "search_space.json"
WAITING_FILE = "waiting.json"  # while trials wait for resources: what the autoscaler says (tune/waiting.py)

TRIALS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("status", pa.string()),
        ("stop_reason", pa.string()),
        ("dataset", pa.string()),
        ("n_train", pa.int64()),
        ("model", pa.string()),
        ("params", pa.int64()),
        ("batch_size", pa.int64()),
        ("lr", pa.float64()),
        ("objective", pa.string()),
        ("seed", pa.int64()),
        ("steps_done", pa.int64()),
        ("tau_mem_step", pa.int64()),
        ("tau_mem_images", pa.int64()),
        ("tau_mem_normalized", pa.float64()),
        ("tau_mem_seconds", pa.float64()),
        ("best_fid", pa.float64()),
        ("best_fid_step", pa.int64()),
        ("node_id", pa.string()),
        # beyond the contract
        ("tau_mem_loss_step", pa.int64()),
        ("budget_steps", pa.int64()),
        ("budget_reason", pa.string()),
        ("wall_s", pa.float64()),
        ("error", pa.string()),
        ("config", pa.string()),  # the trial's resolved ExperimentConfig, JSON
        ("tau_mem_predicted", pa.float64()),  # the budget planner's τ̂ when the trial started (null: no fit)
        ("budget_planned", pa.bool_()),  # the step budget came from the planner, not the config
        # τ by each onset definition (null: it did not fire, or was not measured); tau_mem_step is
        # the stop rule's (stop.on), tau_mem_loss_step above the loss divergence's
        ("tau_mem_pixel_step", pa.int64()),
        ("tau_mem_features_step", pa.int64()),
        ("tau_mem_pixel_raw_step", pa.int64()),
    ]
)

METRICS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("step", pa.int64()),
        ("images_seen", pa.int64()),
        ("wall_s", pa.float64()),
        ("train_loss", pa.float64()),
        ("test_loss", pa.float64()),
        ("mem_frac", pa.float64()),
        ("mem_frac_lo", pa.float64()),
        ("mem_frac_hi", pa.float64()),
        ("fid", pa.float64()),
        # beyond the contract
        ("loss", pa.float64()),  # mean training-batch loss since the previous evaluation
        ("eval_s", pa.float64()),
        ("fid_extractor", pa.string()),
        ("fid_split", pa.string()),
        ("fid_samples", pa.int64()),
        ("mem_frac_features", pa.float64()),
        ("mem_frac_features_lo", pa.float64()),
        ("mem_frac_features_hi", pa.float64()),
        ("sliced_wasserstein", pa.float64()),
        ("fid_train", pa.float64()),
        ("fid_reference", pa.string()),  # where the reference statistics came from, per split
        ("swd_samples", pa.int64()),
        ("mem_embedding", pa.string()),  # the embedding of the feature-space memorization test
        ("mem_samples", pa.int64()),  # samples the memorization test used (eval.sequential_round: fewer when settled early)
        ("mem_frac_raw", pa.float64()),  # the pixel test on the raw weights, when the EMA's are evaluated
        ("mem_frac_raw_lo", pa.float64()),
        ("mem_frac_raw_hi", pa.float64()),
        ("samples", pa.binary()),  # .npy bytes of uint8 [k, C, H, W]: a few generated samples
        ("samples_nn_index", pa.list_(pa.int64())),  # their nearest training images
        ("samples_nn_ratio", pa.list_(pa.float64())),  # ‖x − a₁‖ / ‖x − a₂‖
        # the trial's axes and its onset so far, so `raydiff status` can show a running trial
        ("n_train", pa.int64()),
        ("batch_size", pa.int64()),
        ("lr", pa.float64()),
        ("budget_steps", pa.int64()),
        ("tau_mem_step", pa.int64()),
        # which process reported the row and the checkpoint step it resumed from (0: fresh), so a
        # trial restarted after a crash is visible in its own rows
        ("pid", pa.int64()),
        ("resumed_from_step", pa.int64()),
        ("refined", pa.bool_()),  # a refinement snapshot's row (training/refine.py), not a regular evaluation
    ]
)


ARROW_TYPES = {"float64": pa.float64(), "int64": pa.int64(), "string": pa.string()}

# a figure measured off the loop, on a snapshot: keyed by (trial_id, step, measure); its provenance
# (protocol: feature network, reference, resize; the sample count) beside the measure's own columns
FIGURES_KEYS = ("trial_id", "step", "measure")
FIGURES_BASE = [
    ("trial_id", pa.string()), ("step", pa.int64()), ("measure", pa.string()), ("images_seen", pa.int64()),
    ("protocol", pa.string()), ("n_samples", pa.int64()), ("snapshot_step", pa.int64()), ("measure_s", pa.float64()),
]  # fmt: skip


def figures_schema() -> pa.Schema:
    """The figures files' columns: the keys and provenance, then every fidelity measure's columns."""
    cols = [(c.name, ARROW_TYPES[c.type]) for n in measures.names("fidelity") for c in measures.get(n).columns]
    return pa.schema(FIGURES_BASE + list(dict(cols).items()))


def metrics_schema() -> pa.Schema:
    """METRICS_SCHEMA and, after it, the metric columns of every measure registered beyond the
    built-in ones (raydiff/measures: `Measure.columns`, a raw variant's too)."""
    extra = [(c.name, ARROW_TYPES[c.type]) for c in measures.iter_columns() if c.name not in METRICS_SCHEMA.names]
    return pa.schema(list(METRICS_SCHEMA) + list(dict(extra).items()))


def trials_schema() -> pa.Schema:
    """TRIALS_SCHEMA and a τ column (`tau_mem_<definition>_step`) per onset definition registered beyond it."""
    extra = [(d.tau_column, pa.int64()) for d in measures.definitions() if d.tau_column not in TRIALS_SCHEMA.names]
    return pa.schema(list(TRIALS_SCHEMA) + extra)


# the contract's columns (those above "beyond the contract"): a file without them is not ours
TRIALS_REQUIRED = tuple(TRIALS_SCHEMA.names[: TRIALS_SCHEMA.get_field_index("node_id") + 1])
METRICS_REQUIRED = tuple(METRICS_SCHEMA.names[: METRICS_SCHEMA.get_field_index("fid") + 1])
KEYS = {"trials": ("trial_id", "status"), "metrics": ("trial_id", "step")}  # never null in a file of ours


# --------------------------------------------------------------------------- locations


# URI → (filesystem, path), per process: building an S3 filesystem asks the store for the bucket's
# region (requests of its own), and the results callback opens its sweep's URI at every report.
# Keyed by the AWS_* environment too, which says where the store is (AWS_ENDPOINT_URL) and who asks.
_OPENED: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[pafs.FileSystem, str]] = {}
OBJECT_STORES = ("s3", "gcs")  # pyarrow type_name of the stores that write whole objects, no rename


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a URI such as s3://bucket/prefix.

    pyarrow reads where S3 is from the environment, as the AWS tools do: AWS_ENDPOINT_URL (an
    S3-compatible store such as MinIO), AWS_REGION, the credentials; or from the URI's query
    (`?endpoint_override=host:port&scheme=http`). S3 files are opened with delayed open, so a file
    smaller than one upload part goes in one PUT when it is closed (not three multipart requests)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    key = (uri, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    if key not in _OPENED:
        probe_store(uri)
        try:
            opened = pafs.FileSystem.from_uri(_delayed_open(uri))
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"cannot open storage {uri}: {e}") from None
        if len(_OPENED) >= 64:
            _OPENED.clear()
        _OPENED[key] = opened
    return _OPENED[key]


PROBE_TIMEOUT_S = 5.0  # a store that does not take a connection in this long is down


def store_endpoint(uri: str) -> tuple[str, int] | None:
    """(host, port) of the S3-compatible endpoint a URI names (`?endpoint_override=` in its query,
    else $AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL); None: the cloud's own, found by its SDK."""
    if not uri.startswith("s3://"):
        return None
    query = dict(q.partition("=")[::2] for q in uri.partition("?")[2].split("&") if q)
    endpoint = query.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return None
    scheme = query.get("scheme") or (endpoint.split("://", 1)[0] if "://" in endpoint else "https")
    hostport = endpoint.split("://", 1)[-1].split("/", 1)[0]
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[\w.-]+)(?::(\d{1,5}))?", hostport)
    host, port = (m.group(1), m.group(2)) if m else ("", None)
    port_n = int(port) if port else (80 if scheme == "http" else 443)
    if not host or not 0 < port_n < 65536 or scheme not in ("http", "https"):
        raise UserError(f"storage {uri}: the S3 endpoint {endpoint!r} is not host[:port] or http(s)://host[:port]")
    return host.strip("[]"), port_n


def probe_store(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail in seconds, in one line, when the S3 endpoint a URI names does not answer (the SDK
    would retry for a while and then raise a traceback's worth of curl errors)."""
    endpoint = store_endpoint(uri)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout_s).close()
    except OSError as e:
        raise UserError(
            f"storage {uri.split('?', 1)[0]} does not answer: nothing takes connections at"
            f" {endpoint[0]}:{endpoint[1]} ({e.strerror or e}); start the store or fix AWS_ENDPOINT_URL"
        ) from None


def first_line(e: BaseException) -> str:
    """A storage error's first sentence (the SDK's text runs on with curl codes and details)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split("; Details:")[0]


def _delayed_open(uri: str) -> str:
    """An s3:// URI with allow_delayed_open=true in its query (unless it says otherwise)."""
    if not uri.startswith("s3://"):
        return uri
    base, _, query = uri.partition("?")
    if "allow_delayed_open=" in query:
        return uri
    return f"{base}?{query + '&' if query else ''}allow_delayed_open=true"


def is_object_store(fs: pafs.FileSystem) -> bool:
    return fs.type_name in OBJECT_STORES


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


# ----------------------------------------------------------------------------- writing


def write_atomic(table: pa.Table, fs: pafs.FileSystem, path: str) -> None:
    """Replace the Parquet file at `path` with `table` (see `replace_file`)."""
    buf = pa.BufferOutputStream()  # serialized first: a failure here writes nothing anywhere
    pq.write_table(table, buf)
    replace_file(fs, path, buf.getvalue())


def replace_file(fs: pafs.FileSystem, path: str, data: bytes | pa.Buffer) -> None:
    """Replace the file at `path` with `data`, so that a reader sees the old file or the new one,
    never half of one. Local disk: a temporary sibling renamed over the target. Object store: one
    PUT of the whole object (atomic per object there; no folder markers, no temporary, no copy)."""
    if is_object_store(fs):
        # the upload starts at close (delayed open); larger files go as a multipart upload, which
        # also appears whole at once, when it completes
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = join(parent, f".{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp")
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def table(rows: Iterable[dict[str, Any]], schema: pa.Schema, metadata: dict[str, str]) -> pa.Table:
    rows = list(rows)
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    meta = {k.encode(): v.encode() for k, v in metadata.items()}
    return pa.Table.from_pydict(cols, schema=schema.with_metadata(meta))


def provenance(space_json: str | None = None) -> dict[str, str]:
    """What goes into every file's schema metadata."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("raydiff", "ray", "torch", "torchvision", "numpy", "pyarrow", "clean-fid", "optuna"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "not installed"
    meta = {"raydiff.versions": json.dumps(versions), "raydiff.git_commit": git_commit()}
    if space_json is not None:
        meta["raydiff.search_space"] = space_json
    return meta


def git_commit() -> str:
    if os.environ.get("RAYDIFF_GIT_COMMIT"):
        return os.environ["RAYDIFF_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5,
            ).stdout.strip()  # fmt: skip
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


# ----------------------------------------------------------------------------- reading


def is_results_dir(fs: pafs.FileSystem, root: str) -> bool:
    info = fs.get_file_info([join(root, TRIALS_FILE), join(root, METRICS_DIR), join(root, SPACE_FILE)])
    return any(i.type != pafs.FileType.NotFound for i in info)


def read_table(fs: pafs.FileSystem, path: str) -> pa.Table:
    try:
        with fs.open_input_file(path) as f:
            return pq.read_table(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"corrupt or unreadable Parquet file {path}: {e}") from None


def sweep_identity(metadata: dict | None) -> str | None:
    """What makes a file one sweep's: the sweep's name and axes in the search space its schema
    metadata carries (None: a file that carries none)."""
    text = (metadata or {}).get(b"raydiff.search_space")
    try:
        d = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("sweep"), dict):
        return None
    search = d.get("search") if isinstance(d.get("search"), dict) else {}
    return json.dumps([d["sweep"].get("name"), d.get("grid"), search.get("axes")], sort_keys=True, default=str)


def check_one_sweep(files: list[tuple[str, dict | None]]) -> None:
    """Refuse a results folder whose files come from more than one sweep (a metrics file copied in
    from another): fitted together they would read as one sweep's trials."""
    seen: dict[str, str] = {}
    for path, meta in files:
        ident = sweep_identity(meta)
        if ident is not None:
            seen.setdefault(ident, path)
    if len(seen) > 1:
        (a, b) = list(seen.values())[:2]
        raise UserError(f"{b} comes from another sweep than {a} (another name or other axes): a results folder holds one sweep's files")


def read_contract(fs: pafs.FileSystem, path: str, kind: str) -> pa.Table:
    """A trials or metrics file, checked against the contract: its columns there, of their types,
    its key columns never null. Anything else is one UserError naming the file."""
    schema, required = (trials_schema(), TRIALS_REQUIRED) if kind == "trials" else (metrics_schema(), METRICS_REQUIRED)
    t = read_table(fs, path)
    missing = [c for c in required if c not in t.column_names]
    if missing:
        raise UserError(f"{path} is not a raydiff {kind} file: it lacks the column(s) {', '.join(missing)}")
    target = pa.schema([schema.field(c) if c in schema.names else t.schema.field(c) for c in t.column_names])
    try:
        t = t.cast(target.with_metadata(t.schema.metadata))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise UserError(f"{path} has a column of the wrong type: {e}") from None
    for key in KEYS[kind]:
        if t.column(key).null_count:
            raise UserError(f"{path} has rows without a {key}")
    return t


def read_trials(fs: pafs.FileSystem, root: str) -> pa.Table:
    path = join(root, TRIALS_FILE)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return TRIALS_SCHEMA.empty_table()
    if info.type != pafs.FileType.File:
        raise UserError(f"{path} is not a file")
    return read_contract(fs, path, "trials")


def metric_files(fs: pafs.FileSystem, root: str) -> list[str]:
    d = join(root, METRICS_DIR)
    info = fs.get_file_info(d)
    if info.type == pafs.FileType.NotFound:
        return []
    if info.type != pafs.FileType.Directory:
        raise UserError(f"{d} is not a folder")
    infos = fs.get_file_info(pafs.FileSelector(d))
    bad = [i.path for i in infos if i.path.endswith(".parquet") and i.type != pafs.FileType.File]
    if bad:
        raise UserError(f"{bad[0]} is not a file")
    return sorted(i.path for i in infos if i.path.endswith(".parquet") and not i.base_name.startswith("."))


def metrics_path(root: str, trial_id: str) -> str:
    """A trial's compacted metrics file: all its rows once it has ended."""
    return join(root, METRICS_DIR, f"{trial_id}.parquet")


def metrics_part_path(root: str, trial_id: str, step: int) -> str:
    """The part file of one evaluation of a running trial."""
    return join(root, METRICS_DIR, f"{trial_id}.{int(step):012d}{PART_SUFFIX}")


def is_part(path: str) -> bool:
    return path.endswith(PART_SUFFIX)


def part_step(path: str) -> int | None:
    """The step a part file's name carries (None: not a part file of ours)."""
    if not is_part(path):
        return None
    digits = path.rsplit("/", 1)[-1][: -len(PART_SUFFIX)].rpartition(".")[2]
    return int(digits) if digits.isdigit() else None


def read_metrics(fs: pafs.FileSystem, root: str, columns: list[str] | None = None) -> pa.Table:
    """Every evaluation row of the sweep: the compacted files' and the parts' of running trials.
    A part's row whose (trial_id, step) a compacted file holds too is left out (the trial ended
    and was compacted while its parts were being deleted): the compacted file's row stands."""
    files = metric_files(fs, root)
    if not files:
        return METRICS_SCHEMA.empty_table()
    tables = [read_contract(fs, p, "metrics") for p in files]
    check_one_sweep([(p, t.schema.metadata) for p, t in zip(files, tables)])
    whole = [t for p, t in zip(files, tables) if not is_part(p)]
    parts = [t for p, t in zip(files, tables) if is_part(p)]
    if parts:
        have = {k for t in whole for k in zip(t.column("trial_id").to_pylist(), t.column("step").to_pylist())}
        parts = [t.filter(pa.array([k not in have for k in zip(t.column("trial_id").to_pylist(), t.column("step").to_pylist())], pa.bool_()))
                 for t in parts]  # fmt: skip
    t = pa.concat_tables([t.select(columns) if columns else t for t in whole + parts], promote_options="default")
    return t.sort_by([("trial_id", "ascending"), ("step", "ascending")])


# ----------------------------------------------------------------------------- figures


def figures_path(root: str, trial_id: str, measure: str, step: int) -> str:
    return join(root, FIGURES_DIR, trial_id, measure, f"{step:012d}.parquet")


def write_figures(fs: pafs.FileSystem, root: str, trial_id: str, measure: str, rows: list[dict[str, Any]], metadata: dict[str, str]) -> None:
    """A measure's rows of one trial, one file per snapshot step: measuring a snapshot again
    replaces its file, never duplicates its row, and measures of different steps, trials or kinds
    (Ray tasks running side by side) never write the same file."""
    schema = figures_schema()
    for r in rows:
        row = {**r, "trial_id": trial_id, "measure": measure}
        write_atomic(table([row], schema, metadata), fs, figures_path(root, trial_id, measure, int(r["step"])))


def read_figures(fs: pafs.FileSystem, root: str) -> pa.Table:
    """Every figures row of the sweep (an empty table when nothing was measured off the loop)."""
    d = join(root, FIGURES_DIR)
    schema = figures_schema()
    if fs.get_file_info(d).type != pafs.FileType.Directory:
        return schema.empty_table()
    paths = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(d, recursive=True))
                   if i.type == pafs.FileType.File and i.path.endswith(".parquet") and not i.base_name.startswith("."))  # fmt: skip
    if not paths:
        return schema.empty_table()
    tables = []
    for p in paths:
        t = read_table(fs, p)
        tables.append(t.cast(pa.schema([schema.field(c) if c in schema.names else t.schema.field(c) for c in t.column_names])))
    return pa.concat_tables(tables, promote_options="default")
