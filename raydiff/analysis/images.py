"""Which training images are copied first, and by whose eye: the ledger (samples/) per image.

    images.parquet   one row per trial and training image: the first step a sample was called a
                     copy of it and how many samples were (per memorization test in the ledger),
                     and its covariates: its class, the distance to its nearest other training
                     image (near-duplicates), its typicality (mean distance to its k nearest
                     training images) in pixels and in each feature space the tests used
    agreement.parquet  one row per evaluation and pair of tests: Cohen's κ of their verdicts
    images_vs_typicality.png   first-copy step against duplication and typicality

The finding is a rank correlation (Spearman's ρ, ranked within each trial and pooled) between an
image's first-copy step and its typicality, with a bootstrap interval over images resampled
within trials. An image never copied ranks after every copied one (its first copy, if any, lies
beyond the trial's last evaluation): ρ < 0 with an interval below 0 reads "atypical images
(far from their neighbours) are copied first"; above 0 the opposite; an interval across 0 is
"no evidence". Pixel distances are Euclidean in the pixel test's range ([-1, 1]).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydiff import ledger
from raydiff.metrics.agreement import pairwise_kappa
from raydiff.metrics.onset import mem_onset

TYPICALITY_K = 5  # neighbours averaged for typicality
GALLERY_IMAGES = 8  # first copied images shown per trial


# ----------------------------------------------------------------------------- covariates


def nearest_distances(x: Any, k: int = TYPICALITY_K, chunk: int = 1024) -> np.ndarray:
    """[N, k]: each row of x [N, ...]'s Euclidean distances to its k nearest other rows (k capped
    at N − 1), ascending; exact and chunked (chunk × N distances at a time)."""
    import torch

    v = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(x), -1).double()
    n = v.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return np.full((n, 1), np.nan)
    out = []
    for start in range(0, n, chunk):
        d = torch.cdist(v[start : start + chunk], v)  # [c, N]
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = float("inf")  # not its own neighbour (a duplicate still is)
        out.append(d.topk(k, dim=1, largest=False).values)  # [c, k], ascending
    return torch.cat(out).numpy()


def covariates(x_train: Any, labels: Any = None, embeddings: dict[str, Any] | None = None, k: int = TYPICALITY_K) -> pd.DataFrame:
    """One row per training image: image, label, nn_distance (pixels: the distance to its nearest
    other training image), typicality_pixel (mean distance to its k nearest) and
    typicality_<space> per feature space given ({network: [N, D] embeddings}: mean 1 − cos to its
    k nearest, the cosine tests' own measure)."""
    px = np.asarray(x_train, dtype=np.float32) / 127.5 - 1.0
    top = nearest_distances(px, k)
    out = pd.DataFrame({"image": np.arange(len(px), dtype=np.int64), "nn_distance": top[:, 0], "typicality_pixel": top.mean(1)})
    lab = np.asarray(labels, dtype=np.int64) if labels is not None else [None] * len(px)
    out["label"] = pd.array(lab, dtype="Int64")
    for name, emb in (embeddings or {}).items():
        e = np.asarray(emb, dtype=np.float64)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        out[f"typicality_{name}"] = (nearest_distances(e, k) ** 2 / 2).mean(1)  # on the unit sphere ‖a − b‖²/2 = 1 − cos
    return out


# ---------------------------------------------------------------------------- the table


def images_table(rows: pd.DataFrame, covs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """images.parquet: for each trial with ledger rows, every training image of its covariates
    table (covs: trial → `covariates`), with first_step_<test> and copies_<test> per test."""
    tests = [t for t in ledger.tests() if ledger.column("copied", t) in rows and rows[ledger.column("copied", t)].notna().any()]
    out = []
    for tid, cov in covs.items():
        part = cov.copy()
        part.insert(0, "trial_id", tid)
        mine = rows[rows.trial_id == tid]
        for t in tests:
            fc = ledger.first_copies(mine, t).set_index("image")
            part[f"first_step_{t}"] = pd.array(part.image.map(fc["first_step"]), dtype="Int64")
            part[f"copies_{t}"] = part.image.map(fc["copies"]).fillna(0).astype("int64")
        out.append(part)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["trial_id", "image"])


def tests_in(table: pd.DataFrame) -> list[str]:
    return [c.removeprefix("first_step_") for c in table.columns if c.startswith("first_step_")]


# ------------------------------------------------------------------------- correlation


@dataclass(frozen=True)
class Correlation:
    covariate: str
    test: str
    rho: float
    lo: float
    hi: float
    n_images: int
    n_copied: int
    n_trials: int

    def finding(self) -> str:
        what = {"typicality": "atypical images", "nn_distance": "images far from any other training image"}
        other = {"typicality": "typical images", "nn_distance": "near-duplicated images"}
        key = "nn_distance" if self.covariate == "nn_distance" else "typicality"
        if self.n_copied == 0 or not np.isfinite(self.rho):
            return f"no evidence ({self.covariate}, {self.test} test): no image was copied"
        stat = f"ρ = {self.rho:+.2f} [{self.lo:+.2f}, {self.hi:+.2f}], {self.n_copied} of {self.n_images} images copied"
        if self.hi < 0:
            return f"{what[key]} are copied first ({self.test} test): {stat}"
        if self.lo > 0:
            return f"{other[key]} are copied first ({self.test} test): {stat}"
        return f"no evidence that {self.covariate} orders the first copies ({self.test} test): {stat}"

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "finding": self.finding()}


def _within_ranks(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Ranks (average for ties) scaled to [0, 1] within each group."""
    from scipy.stats import rankdata

    out = np.empty(len(values))
    for g in np.unique(groups):
        m = groups == g
        r = rankdata(values[m])
        out[m] = (r - 1) / max(1, m.sum() - 1)
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def first_copy_correlation(table: pd.DataFrame, covariate: str, test: str, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Correlation:
    """Spearman's ρ between first-copy step (never copied: after every copied image) and the
    covariate, ranked within trials and pooled; percentile bootstrap over images within trials."""
    t = table[table[covariate].notna()]
    step = t[f"first_step_{test}"].astype("Float64").fillna(np.inf).to_numpy(dtype=float)
    cov = t[covariate].to_numpy(dtype=float)
    groups = t.trial_id.to_numpy()
    copied = int(np.isfinite(step).sum())
    if copied == 0 or len(t) < 3:
        return Correlation(covariate, test, float("nan"), float("nan"), float("nan"), len(t), copied, len(np.unique(groups)))
    rho = _pearson(_within_ranks(step, groups), _within_ranks(cov, groups))
    rng = np.random.default_rng(seed)
    idx_by = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    boots = []
    for _ in range(n_boot):
        pick = np.concatenate([rng.choice(ix, len(ix)) for ix in idx_by])
        boots.append(_pearson(_within_ranks(step[pick], groups[pick]), _within_ranks(cov[pick], groups[pick])))
    boots = np.asarray(boots)
    boots = boots[np.isfinite(boots)]
    a = (1 - level) / 2
    lo, hi = (np.quantile(boots, [a, 1 - a]) if len(boots) else (np.nan, np.nan))
    return Correlation(covariate, test, rho, float(lo), float(hi), len(t), copied, len(idx_by))


# --------------------------------------------------------------------------- agreement


def agreement_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trial, evaluation and pair of tests that both ran: κ and the sample count."""
    tests = [t for t in ledger.tests() if ledger.column("copied", t) in rows]
    out = []
    for (tid, step), ev in rows.groupby(["trial_id", "step"], sort=True):
        ran = {t: ev[ledger.column("copied", t)] for t in tests if ev[ledger.column("copied", t)].notna().all()}
        for (x, y), k in pairwise_kappa({t: v.astype(bool).to_numpy() for t, v in ran.items()}).items():
            out.append({"trial_id": tid, "step": int(step), "test_a": x, "test_b": y, "kappa": k, "samples": len(ev)})
    return pd.DataFrame(out, columns=["trial_id", "step", "test_a", "test_b", "kappa", "samples"])


def onsets_by_test(rows: pd.DataFrame, threshold: float = 0.1, patience: int = 2) -> pd.DataFrame:
    """Per trial and test, the onset (metrics/onset.mem_onset) of the copied fraction the ledger
    records at each evaluation: the tests' onsets side by side."""
    out = []
    for tid, mine in rows.groupby("trial_id", sort=True):
        rec = {"trial_id": tid}
        for t in ledger.tests():
            col = ledger.column("copied", t)
            if col not in mine or mine[col].isna().all():
                continue
            frac = mine.groupby("step")[col].mean()
            rec[t] = mem_onset(list(frac.index), [float(v) for v in frac], threshold, patience)
        out.append(rec)
    return pd.DataFrame(out)


def disagreements(table: pd.DataFrame) -> pd.DataFrame:
    """Per trial and ordered pair of tests: images the first calls copied (at some evaluation)
    and the second never does."""
    tests = tests_in(table)
    out = []
    for tid, t in table.groupby("trial_id", sort=True):
        for x in tests:
            for y in tests:
                if x != y:
                    only = t[(t[f"copies_{x}"] > 0) & (t[f"copies_{y}"] == 0)].image.tolist()
                    out.append({"trial_id": tid, "copied_by": x, "not_by": y, "images": len(only), "first": only[:10]})
    return pd.DataFrame(out, columns=["trial_id", "copied_by", "not_by", "images", "first"])


# ------------------------------------------------------------------------------ figure


def figure(table: pd.DataFrame, test: str, path: Path) -> Path:
    """First-copy step against nn_distance and typicality_pixel, one colour per trial; images
    never copied drawn as crosses above the top of the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    col = f"first_step_{test}"
    top = float(table[col].max()) if table[col].notna().any() else 1.0
    for ax, cov, label in zip(axes, ("nn_distance", "typicality_pixel"), ("distance to nearest other training image", f"typicality: mean distance to {TYPICALITY_K} nearest")):
        for tid, t in table.groupby("trial_id", sort=True):
            hit = t[t[col].notna()]
            pts = ax.scatter(hit[cov], hit[col], s=14, alpha=0.7, label=tid)
            never = t[t[col].isna()]
            ax.scatter(never[cov], np.full(len(never), top * 1.08), s=8, marker="x", alpha=0.3, color=pts.get_facecolor()[0])
        ax.set_xlabel(f"{label} (pixels)")
    axes[0].set_ylabel(f"first step copied ({test} test); × never")
    if table.trial_id.nunique() <= 10:
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- gallery


def _png_row(images: list[np.ndarray], scale: int = 4) -> bytes:
    """uint8 [C, H, W] images side by side (2 px gaps), enlarged, as PNG bytes."""
    from PIL import Image

    h = max(im.shape[1] for im in images)
    w = sum(im.shape[2] for im in images) + 2 * (len(images) - 1)
    canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    x = 0
    for im in images:
        rgb = np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im[:3]
        canvas[: im.shape[1], x : x + im.shape[2]] = rgb.transpose(1, 2, 0)
        x += im.shape[2] + 2
    buf = io.BytesIO()
    Image.fromarray(canvas).resize((w * scale, h * scale), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class GalleryEntry:
    image: int
    first_step: int
    copies: int
    train: np.ndarray  # uint8 [C, H, W]
    samples: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (step, uint8 [C, H, W]) that copied it


def gallery_entries(rows: pd.DataFrame, evals: list[dict], x_train: Any, test: str, n: int = GALLERY_IMAGES, per_image: int = 3) -> list[GalleryEntry]:
    """The first n images a trial copied (by `test`), each with up to per_image stored samples
    that copied it: the evaluations' saved samples (metrics `samples`, the first eval.save_samples
    of each evaluation) whose ledger row names it."""
    from raydiff.evaluation import decode_array

    stored = {}
    for r in evals:
        if r.get("samples"):
            stored[int(r["step"])] = decode_array(bytes(r["samples"]))
    copied, nearest = ledger.column("copied", test), ledger.column("nearest", test)
    hits = rows[rows[copied].fillna(False).astype(bool)] if copied in rows else rows.iloc[:0]
    out = []
    for fc in ledger.first_copies(rows, test).head(n).itertuples():
        e = GalleryEntry(int(fc.image), int(fc.first_step), int(fc.copies), np.asarray(x_train[int(fc.image)]))
        for h in hits[hits[nearest] == fc.image].sort_values(["step", "sample"]).itertuples():
            s = stored.get(int(h.step))
            if s is not None and h.sample < len(s) and len(e.samples) < per_image:
                e.samples.append((int(h.step), s[int(h.sample)]))
        out.append(e)
    return out


def gallery_section(galleries: dict[str, list[GalleryEntry]], test: str) -> str:
    """report.html's section: per trial, its first copied images (left) beside samples that copied them."""
    import base64

    if not any(galleries.values()):
        return ""
    parts = [f"<h3>First images copied ({escape(test)} test)</h3><p>Per trial, in order of first copy: the training"
             " image, then stored samples (eval.save_samples) that copied it, with their steps.</p>"]  # fmt: skip
    for tid, entries in galleries.items():
        if not entries:
            continue
        cells = []
        for e in entries:
            png = base64.b64encode(_png_row([e.train] + [s for _, s in e.samples])).decode("ascii")
            steps = ", ".join(str(s) for s, _ in e.samples) or "none stored"
            cells.append(
                f"<figure style='display:inline-block;margin:.4em'><img alt='image {e.image}' src='data:image/png;base64,{png}'>"
                f"<figcaption>#{e.image}: first step {e.first_step}, {e.copies} copies; samples at {escape(steps)}</figcaption></figure>"
            )
        parts.append(f"<h4>{escape(tid)}</h4>" + "".join(cells))
    return "".join(parts)


def agreement_section(kappa: pd.DataFrame, onsets: pd.DataFrame, dis: pd.DataFrame) -> str:
    """report.html's section: onsets per test side by side, κ per pair (median over evaluations,
    and at the last one), the images one test copies and another does not."""
    if onsets.empty or len(onsets.columns) <= 2:
        return ""
    tests = [c for c in onsets.columns if c != "trial_id"]
    head = "".join(f"<th>{escape(t)}</th>" for t in tests)
    body = "".join(
        "<tr><td class=l>" + escape(str(r["trial_id"])) + "</td>" + "".join(f"<td>{'-' if pd.isna(r[t]) else int(r[t])}</td>" for t in tests) + "</tr>"
        for _, r in onsets.iterrows()
    )
    html = f"<h3>Onset by each test</h3><table><tr><th class=l>trial</th>{head}</tr>{body}</table>"
    if not kappa.empty:
        g = kappa.groupby(["test_a", "test_b"])["kappa"]
        rows = "".join(
            f"<tr><td class=l>{escape(a)} – {escape(b)}</td><td>{v.median():.3f}</td><td>{len(v)}</td></tr>" for (a, b), v in g
        )
        html += f"<h3>Agreement (Cohen's κ per evaluation)</h3><table><tr><th class=l>pair</th><th>median κ</th><th>evaluations</th></tr>{rows}</table>"
    if not dis.empty:
        rows = "".join(
            f"<tr><td class=l>{escape(r.trial_id)}</td><td class=l>{escape(r.copied_by)}</td><td class=l>{escape(r.not_by)}</td>"
            f"<td>{r.images}</td><td class=l>{escape(', '.join(map(str, r.first)))}</td></tr>"
            for r in dis[dis.images > 0].itertuples()
        )
        if rows:
            html += ("<h3>Images one test calls copies and another does not</h3><table><tr><th class=l>trial</th>"
                     f"<th class=l>copied by</th><th class=l>not by</th><th>images</th><th class=l>first of them</th></tr>{rows}</table>")  # fmt: skip
    return html


# ------------------------------------------------------------------------------ driver


@dataclass
class ImagesReport:
    table: pd.DataFrame  # images.parquet
    kappa: pd.DataFrame  # agreement.parquet
    onsets: pd.DataFrame
    correlations: list[Correlation]
    test: str  # the test the findings and the gallery read (pixel when the ledger has it)
    files: list[Path]
    html: str
    notes: list[str]

    @property
    def findings(self) -> list[str]:
        return [c.finding() for c in self.correlations]


def _trial_config(trial: dict) -> Any:
    import json

    from raydiff.config import experiment_from_dict

    raw = trial.get("config")
    return experiment_from_dict(json.loads(raw)) if raw else None


def images_report(sweep: Any, out: Path, n_boot: int = 1000) -> ImagesReport | None:
    """The ledger's analysis of a sweep into `out` (None when the sweep kept no ledger): the
    training images of each finished trial (its config's data), their covariates, the tables,
    the figure, the findings and report.html's section."""
    from raydiff import results
    from raydiff.data import load
    from raydiff.errors import UserError

    fs, root = results.filesystem(sweep.uri)
    rows = ledger.read_samples(fs, root).to_pandas()
    if rows.empty:
        return None
    notes: list[str] = []
    configs = {t["trial_id"]: _trial_config(t) for t in sweep.trials}
    data_cache: dict[Any, Any] = {}
    covs, train_images = {}, {}
    for tid in sorted(rows.trial_id.unique()):
        cfg = configs.get(tid)
        if cfg is None:
            notes.append(f"ledger of {tid}: no finished row with its config yet, left out of images.parquet")
            continue
        if cfg.data not in data_cache:
            data_cache[cfg.data] = load(cfg.data)
        data = data_cache[cfg.data]
        embeddings = {}
        for t in ledger.tests():
            col = ledger.column("copied", t)
            net = getattr(_measure(t), "network", None)
            if net and col in rows and rows.loc[rows.trial_id == tid, col].notna().any() and net not in embeddings:
                try:
                    from raydiff.metrics.features import load as load_network

                    embeddings[net] = load_network(net, cfg, "cpu")(data.x_train).numpy()
                except UserError as e:
                    notes.append(f"typicality in {net} space of {tid}: {e}")
        labels = data.y_train.numpy() if data.y_train is not None else None  # the class, conditioned on or not
        covs[tid] = covariates(data.x_train.numpy(), labels, embeddings)
        train_images[tid] = data.x_train.numpy()
    table = images_table(rows, covs)
    kappa = agreement_table(rows)
    stop = next(iter(configs.values())).stop if configs and next(iter(configs.values())) else None
    onsets = onsets_by_test(rows, *(stop.mem_frac_threshold, stop.patience) if stop else ())
    tests = tests_in(table)
    test = "pixel" if "pixel" in tests else (tests[0] if tests else "pixel")
    files: list[Path] = []
    meta = {"raydiff.git_commit": sweep.git_commit}
    lfs = results.filesystem(str(out))[0]
    if len(table):
        import pyarrow as pa

        for name, df in (("images.parquet", table), ("agreement.parquet", kappa)):
            t = pa.Table.from_pandas(df, preserve_index=False)
            results.write_atomic(t.replace_schema_metadata({**(t.schema.metadata or {}), **{k.encode(): v.encode() for k, v in meta.items()}}), lfs, str(out / name))
            files.append(out / name)
    correlations = []
    if tests:
        correlations = [first_copy_correlation(table, c, test, n_boot) for c in ("typicality_pixel", "nn_distance")]
        files.append(figure(table, test, out / "images_vs_typicality.png"))
    galleries = {
        tid: gallery_entries(rows[rows.trial_id == tid], sweep.evals.get(tid, []), train_images[tid], test)
        for tid in covs
    }
    html = images_html(correlations, files, kappa, onsets, disagreements(table) if tests else pd.DataFrame(), galleries, test, notes)
    return ImagesReport(table, kappa, onsets, correlations, test, files, html, notes)


def _measure(test: str) -> Any:
    from raydiff import measures

    return measures.get(test)


def images_html(correlations, files, kappa, onsets, dis, galleries, test, notes) -> str:
    """report.html's section on the ledger: findings, figure, agreement, gallery."""
    import base64

    parts = ["<h2>Which images are copied first</h2>"]
    if correlations:
        parts.append("<ul>" + "".join(f"<li>{escape(c.finding())}</li>" for c in correlations) + "</ul>")
        parts.append(f"<p class=muted>Spearman's ρ between each image's first-copy step and the covariate, ranked within"
                     f" trials (never copied: after every copied image); 95% bootstrap interval over images resampled within"
                     f" trials. Typicality: mean distance to its {TYPICALITY_K} nearest training images.</p>")  # fmt: skip
    for p in files:
        if p.suffix == ".png":
            src = "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{escape(p.name)}' src='{src}'><figcaption>{escape(p.name)}: first-copy step"
                         f" ({escape(test)} test) against duplication and typicality</figcaption></figure>")  # fmt: skip
    parts.append(agreement_section(kappa, onsets, dis))
    parts.append(gallery_section(galleries, test))
    parts += [f"<div class=warn>{escape(n)}</div>" for n in notes]
    return "".join(parts)
