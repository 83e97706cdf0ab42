"""6. Nearest-neighbour scaling: `raydiff.metrics.memorization.nearest_two` (chunked, exact) against
a straightforward `torch.cdist` over everything + topk, for N training images and S samples of
CIFAR size (3×32×32 = 3072 values).

Each (case, method) runs in a fresh subprocess, so its peak resident memory (VmHWM, reset just
before the call; it counts torch's CPU allocations, unlike tracemalloc) minus the RSS before the
call is that method's own. Methods alternate within each case. Half the samples are near-copies of training
images (as a memorizing model's would be), half fresh noise. Exactness: the indices of both
methods are compared, and raydiff's (index, distance) checked against float64 distances to all
N images for a subset of samples.

    python -m benchmarks.neighbours N S METHOD CHUNK OUT.npz   (one worker; run.py drives them)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Section, median

D = 3 * 32 * 32
ROOT = Path(__file__).resolve().parent.parent


def make_data(n: int, s: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """train [N, D], samples [S, D] in [-1, 1] (float32), as raydiff's evaluator passes them."""
    g = torch.Generator().manual_seed(seed)
    train = torch.empty(n, D)
    for i in range(0, n, 1024):  # in blocks: the process's peak memory stays ≈ what it holds
        rows = min(1024, n - i)
        train[i : i + rows] = torch.randint(0, 256, (rows, D), generator=g, dtype=torch.uint8).float().div_(127.5).sub_(1.0)
    near = s // 2
    pick = torch.randint(0, n, (near,), generator=g)
    samples = torch.cat([
        (train[pick] + 0.05 * torch.randn(near, D, generator=g)).clamp_(-1, 1),
        torch.rand(s - near, D, generator=g) * 2 - 1,
    ])  # fmt: skip
    return train, samples


def rss_peak_mib() -> float:
    """The process's peak resident memory (VmHWM; getrusage's max RSS where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak() -> None:
    """Reset the peak to the current RSS (Linux ≥ 4.0), so the import-time peak does not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def nearest_two_before(samples: torch.Tensor, train: torch.Tensor, chunk: int = 1024, k: int = 8):
    """raydiff's nearest_two as it was before this suite (commit fbb2353), for the before column:
    an [N, D] temporary for the norms, three [c, N] buffers, a [c, k, D] gather."""
    s, t = samples.float(), train.float()
    t_sq = t.square().sum(1)
    d1, d2, idx = [], [], []
    for start in range(0, s.shape[0], chunk):
        block = s[start : start + chunk]
        approx = t_sq[None, :] - 2.0 * block @ t.T
        cand = approx.topk(k, dim=1, largest=False).indices
        exact = (block[:, None, :] - t[cand]).square().sum(-1).sqrt()
        exact, order = exact.sort(dim=1)
        d1.append(exact[:, 0])
        d2.append(exact[:, 1])
        idx.append(cand.gather(1, order[:, :1]).squeeze(1))
    return torch.cat(d1), torch.cat(d2), torch.cat(idx)


def worker(n: int, s: int, method: str, chunk: int, out: str) -> None:
    torch.set_num_threads(1)
    train, samples = make_data(n, s)
    reset_peak()
    before = rss_peak_mib()
    t0 = time.perf_counter()
    if method == "raydiff":
        from raydiff.metrics.memorization import nearest_two

        nb = nearest_two(samples, train, chunk=chunk)
        d1, d2, idx = nb.d1, nb.d2, nb.index
    elif method == "before":
        d1, d2, idx = nearest_two_before(samples, train, chunk)
    else:
        dist = torch.cdist(samples, train)  # [S, N]
        top = dist.topk(2, dim=1, largest=False)
        d1, d2, idx = top.values[:, 0], top.values[:, 1], top.indices[:, 0]
    sec = time.perf_counter() - t0
    peak = rss_peak_mib() - before
    np.savez(out, d1=d1.numpy(), d2=d2.numpy(), idx=idx.numpy())
    print(json.dumps({"seconds": sec, "peak_mib": peak}))


def run_worker(n: int, s: int, method: str, chunk: int, out: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.neighbours", str(n), str(s), method, str(chunk), out],
        capture_output=True, text=True, cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def exactness(n: int, s: int, ours: dict, theirs: dict, check: int = 64) -> dict:
    """Index agreement, and ours against float64 brute force on `check` samples."""
    train, samples = make_data(n, s)
    agree = float((ours["idx"] == theirs["idx"]).mean())
    rows = np.linspace(0, s - 1, min(check, s)).astype(int)
    t64 = train.double()
    worst_d, wrong = 0.0, 0
    for i in rows:
        dist = (t64 - samples[i].double()).square().sum(1).sqrt()  # [N]
        two = dist.topk(2, largest=False)
        wrong += int(two.indices[0]) != int(ours["idx"][i]) and float(dist[ours["idx"][i]]) > float(two.values[0])
        worst_d = max(worst_d, abs(float(two.values[0]) - float(ours["d1"][i])) / float(two.values[0]),
                      abs(float(two.values[1]) - float(ours["d2"][i])) / float(two.values[1]))  # fmt: skip
    return {"index_agreement": agree, "checked": len(rows), "wrong_nn": wrong, "max_rel_err": worst_d}


def run(quick: bool) -> Section:
    if quick:
        cases, reps, tune = [(1000, 100)], 1, []
    else:
        cases, reps, tune = [(5_000, 1_000), (50_000, 1_000), (50_000, 10_000)], 1, [256, 4096]
    rows, data = [], {}
    with tempfile.TemporaryDirectory(prefix="raydiff-nn-") as tmp:
        for n, s in cases:
            methods = {"raydiff chunk 1024": ("raydiff", 1024), "before: raydiff chunk 1024": ("before", 1024),
                       "cdist + topk": ("cdist", 0)}  # fmt: skip
            if (n, s) == cases[-1]:
                methods.update({f"raydiff chunk {c}": ("raydiff", c) for c in tune})
            res: dict[str, list[dict]] = {k: [] for k in methods}
            names = list(methods)
            for r in range(reps):
                for name in names if r % 2 == 0 else names[::-1]:
                    m, c = methods[name]
                    out = os.path.join(tmp, f"{m}{c}.npz")
                    res[name].append(run_worker(n, s, m, c, out) | {"out": out})
            ours = dict(np.load(res["raydiff chunk 1024"][0]["out"]))
            theirs = dict(np.load(res["cdist + topk"][0]["out"]))
            ex = exactness(n, s, ours, theirs, check=16 if quick else 64)
            for name in names:
                sec = median([x["seconds"] for x in res[name]])
                mib = median([x["peak_mib"] for x in res[name]])
                exact = (f"{ex['index_agreement']:.2%} same index as cdist; float64 check: {ex['wrong_nn']}/{ex['checked']} "
                         f"wrong, max rel. err {ex['max_rel_err']:.1e}") if name == "raydiff chunk 1024" else ""  # fmt: skip
                rows.append([f"{n:,}", f"{s:,}", name, sec, mib, exact])
                data[f"{n}/{s}/{name}"] = {"seconds": sec, "peak_mib": mib, **(ex if exact else {})}
    big = cases[-1]
    ours_big = data[f"{big[0]}/{big[1]}/raydiff chunk 1024"]
    cd_big = data[f"{big[0]}/{big[1]}/cdist + topk"]
    exact_ok = all(v.get("wrong_nn", 0) == 0 for v in data.values())
    return Section(
        "6", "Nearest-neighbour scaling (CIFAR-size, D = 3072)", "bounded memory, exact",
        f"N={big[0]:,}, S={big[1]:,}: raydiff {ours_big['seconds']:.1f} s / {ours_big['peak_mib']:.0f} MiB "
        f"vs cdist {cd_big['seconds']:.1f} s / {cd_big['peak_mib']:.0f} MiB",
        None if quick else (exact_ok and ours_big["peak_mib"] < cd_big["peak_mib"]),
        ["N", "S", "method", "seconds", "peak MiB above inputs", "exactness"], rows,
        notes=["one torch thread; each run in a fresh process; peak = the process's peak RSS (VmHWM, reset "
               "before the call) minus its RSS before the call (inputs excluded)",
               "the float64 check counts a 'wrong' nearest neighbour only if raydiff's is strictly farther"],
        data=data,
    )  # fmt: skip


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5])
