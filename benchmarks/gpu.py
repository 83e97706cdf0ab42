"""GPU benchmarks, one prepared script for one GPU (about five minutes on an H100 with gpu.sh's settings).

    bash benchmarks/gpu.sh                 # on a GPU machine: writes benchmarks/RESULTS-gpu.md
    python -m benchmarks.gpu --cpu         # dry mode on CPU, toy sizes: checks the script runs

(from the repository root; gpu.sh changes there itself.)

Measures, with the Marion & Wu presets (marion-2.9m, -25.8m, -92.7m; fallback to whatever
marion-* presets exist) on 32×32×3 data resident on the GPU, rectified flow, Adam (fused), bf16
autocast, raydiff's own training step (`raydiff.training.step.OptimizerStep`: loss, clip, Adam, EMA):
  1. training steps/s and model FLOP utilisation (FLOPs of one step counted by
     torch.utils.flop_counter; MFU = FLOPs × steps/s / the GPU's peak bf16 FLOP/s) at B=16, 128;
     for the smallest preset also with `train.compile` default and reduce-overhead (CUDA graphs),
     compile time reported apart;
  2. cost per evaluation (loss probes, memorization sampling at 250 and 50 steps, nearest
     neighbours) at the paper grid's counts, pixel-space test, no FID/SSCD (no network), with the
     full count and with the sequential test (`eval.sequential_round: 32`) on a generalizing
     (freshly initialised) model: samples generated and seconds;
  3. throughput of 1, 2, 4 and 8 small trials packed on the one GPU as separate processes, each
     capped at 1/k of the GPU's memory as a fractional `resources.gpu` does, aggregate steps/s
     over a common window and each process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}  # dense, no sparsity
WANTED = ["marion-2.9m", "marion-25.8m", "marion-92.7m"]


ONLY: list[str] = []  # --presets: these instead of WANTED (gpu.sh names the two smaller, to fit its 10 minutes)


def presets(cpu: bool) -> list[str]:
    from raydiff.config import PRESETS

    if cpu:
        return ["digits-tiny"]
    have = [p for p in (ONLY or WANTED) if p in PRESETS]
    return have or sorted(p for p in PRESETS if p.startswith("marion-"))[:3] or ["digits-small"]


def experiment(preset: str, batch: int, cpu: bool, **eval_over):
    from raydiff.config import ExperimentConfig, apply_overrides

    size, ch = (8, 1) if cpu else (32, 3)
    over = {
        "data.dataset": "gmm", "data.image_size": size, "data.channels": ch, "data.n_train": 64 if cpu else 2048,
        "data.n_test": 64 if cpu else 5120, "model.preset": preset, "diffusion.objective": "flow",
        "diffusion.sampler": None, "train.batch_size": batch, "train.device": "cpu" if cpu else "cuda",
        "eval.fid_every": 0, "eval.fid_every_steps": None, "eval.save_samples": 0, **eval_over,
    }  # fmt: skip
    return apply_overrides(ExperimentConfig(), over)


def setup(cfg):
    from raydiff.data import load
    from raydiff.diffusion import build_process
    from raydiff.training.state import TrainState, configure_backends, resolve_device

    device = resolve_device(cfg.train.device)
    configure_backends(device)  # as a trial does: cudnn.benchmark and TF32 on CUDA
    data = load(cfg.data)
    ts = TrainState(cfg, data, device)
    return device, data, build_process(cfg.diffusion), ts


def make_step(cfg, device, process, ts, data):
    """raydiff's own training step (the one a trial runs), train.compile included."""
    from raydiff.training.step import OptimizerStep

    return OptimizerStep(cfg, ts, process, data, device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return float(fc.get_total_flops())


def training_cases(cpu: bool) -> list[tuple[str, int, str]]:
    """(preset, batch, train.compile): every preset uncompiled at both batch sizes; the smallest
    at B=16, where its step is launch-bound, also compiled (default) and with CUDA graphs
    (reduce-overhead): each compile costs tens of seconds, so only there."""
    names, batches = presets(cpu), (2, 4) if cpu else (16, 128)
    cases = [(p, b, "off") for p in names for b in batches]
    if cpu:  # the dry mode skips compiling (minutes on CPU); tests/loops/test_compile.py runs the switch
        return cases
    return cases + [(names[0], batches[0], m) for m in ("default", "reduce-overhead")]


def bench_training(cpu: bool, seconds: float, peak: float) -> list[dict]:
    rows, flops_of = [], {}  # FLOPs counted on the uncompiled step (the counter does not see inside a compiled graph)
    for preset, batch, mode in training_cases(cpu):
        cfg = experiment(preset, batch, cpu, **{"train.compile": mode})
        device, data, process, ts = setup(cfg)
        step = make_step(cfg, device, process, ts, data)
        t0 = time.perf_counter()
        for _ in range(3):  # warm-up; the compile, if any, happens here
            step()
        sync(device)
        warm_s = time.perf_counter() - t0
        if mode == "off":
            flops_of[preset, batch] = step_flops(step)
        flops = flops_of.get((preset, batch), 0.0)
        sync(device)
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            step()
            k += 1
            if k % 10 == 0:
                sync(device)
        sync(device)
        rate = k / (time.perf_counter() - t0)
        rows.append({"preset": preset, "params": ts.params, "batch": batch, "compile": mode, "steps_s": rate,
                     "tflop_step": flops / 1e12, "mfu": flops * rate / (peak * 1e12), "warmup_s": warm_s})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        del ts, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    off = {(r["preset"], r["batch"]): r["steps_s"] for r in rows if r["compile"] == "off"}
    for r in rows:
        r["vs_off"] = r["steps_s"] / off[r["preset"], r["batch"]]
    return rows


def bench_eval(cpu: bool) -> list[dict]:
    """One evaluation at the paper grid's counts on a freshly initialised (so generalizing) model:
    the whole evaluation, then the memorization test alone with the full count and with the
    sequential test, which stops generating once f_mem's interval clears the threshold."""
    from raydiff.evaluation import Evaluator

    rows = []
    counts = dict(num_samples=128, probe_images=16, round=32) if cpu else dict(num_samples=1024, probe_images=5120, round=32)
    for preset in presets(cpu):
        for mem_steps in (250, 50) if not cpu else (10, 5):
            over = {"eval.num_samples": counts["num_samples"], "eval.probe_images": counts["probe_images"], "diffusion.sample_steps": mem_steps}
            row: dict = {"preset": preset, "sampler_steps": mem_steps, "num_samples": counts["num_samples"], "probe_images": counts["probe_images"]}
            for label, sequential in (("full", None), ("sequential", counts["round"])):
                cfg = experiment(preset, 16, cpu, **over, **{"eval.sequential_round": sequential})
                device, data, process, ts = setup(cfg)
                ev = Evaluator(cfg, data, process, device)
                net = ts.ema if ts.ema is not None else ts.net
                ev.sample(net, min(cfg.eval.sample_batch, cfg.eval.num_samples), 2)  # warm-up (cuDNN autotune)
                sync(device)
                if sequential is None:
                    t0 = time.perf_counter()
                    ev(net, 0)
                    sync(device)
                    row["eval_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                m = ev(net, 0, memorization_only=True)
                sync(device)
                row[f"mem_{label}_s"], row[f"mem_{label}_samples"] = time.perf_counter() - t0, m.get("mem_samples")
                del ev, ts
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def worker(args) -> None:
    """One packed trial: set up, say "ready", read "START UNTIL" (epoch seconds) from stdin, then
    train from START to UNTIL and print the steps done and the peak memory: every trial's window is
    the same. With --share 1/k, the process is capped at that fraction of the GPU's memory, as
    the trainable caps a trial granted a fractional GPU."""
    cfg = experiment(args.preset, args.batch, args.cpu)
    torch.set_num_threads(1)
    device, data, process, ts = setup(cfg)
    if device.type == "cuda" and args.share < 1:
        torch.cuda.set_per_process_memory_fraction(args.share)
    step = make_step(cfg, device, process, ts, data)
    for _ in range(3):
        step()
    sync(device)
    print("ready", flush=True)
    start, until = map(float, sys.stdin.readline().split())
    while time.time() < start:
        time.sleep(0.001)
    k = 0
    while time.time() < until:
        step()
        k += 1
        if k % 10 == 0:
            sync(device)
    sync(device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    print(json.dumps({"steps": k, "seconds": time.time() - start, "peak_mib": peak}), flush=True)


def bench_packing(cpu: bool, seconds: float) -> list[dict]:
    preset = presets(cpu)[0]
    batch = 4 if cpu else 16
    rows = []
    for k in (1, 2) if cpu else (1, 2, 4, 8):
        cmd = [sys.executable, "-m", "benchmarks.gpu", "--worker", "--preset", preset, "--batch", str(batch), "--share", str(1.0 / k)]
        cmd += ["--cpu"] if cpu else []
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
                 for _ in range(k)]  # fmt: skip
        for p in procs:  # every process initialised before any starts timing
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"packed trial worker failed to start (exit {p.wait()})")
        start = time.time() + 0.5
        for p in procs:
            p.stdin.write(f"{start} {start + seconds}\n")
            p.stdin.flush()
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        total = sum(o["steps"] / o["seconds"] for o in outs)
        rows.append({"trials": k, "preset": preset, "batch": batch, "memory_cap": f"1/{k}", "aggregate_steps_s": total,
                     "per_trial_steps_s": total / k, "peak_mib_max": max(o["peak_mib"] for o in outs)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["aggregate_steps_s"]
    for r in rows:
        r["speedup"] = r["aggregate_steps_s"] / base
    return rows


def markdown(info: dict, train_rows, eval_rows, pack_rows) -> str:
    def tab(rows: list[dict]) -> str:
        if not rows:
            return "(none)"
        cols = list(rows[0])
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
        return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows])

    return "\n\n".join([
        "# raydiff GPU benchmarks", f"Command: `{info['command']}`  \nDate: {info['date']}  \nDevice: {info['device']}, "
        f"peak bf16 {info['peak_tflops']} TFLOP/s (for MFU); torch {info['torch']}",
        "## Training steps/s and MFU (raydiff's step: bf16 autocast, clip, fused Adam, EMA; train.compile as given)", tab(train_rows),
        "## Cost per evaluation (probes + memorization sampling + nearest neighbours; no FID), and the memorization test alone: full count vs sequential test", tab(eval_rows),
        "## Packed trials on one GPU (separate processes, each capped at 1/k of the memory)", tab(pack_rows),
    ]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="dry mode on CPU at toy sizes (checks the script)")
    p.add_argument("--seconds", type=float, help="timing window per measurement (default 8; --cpu 1)")
    p.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s for MFU (default: by GPU name)")
    p.add_argument("--out", help="Markdown report (default: benchmarks/RESULTS-gpu.md on a GPU; none with --cpu)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: train,eval,pack")
    p.add_argument("--presets", default="", help="comma-separated presets instead of marion-2.9m,-25.8m,-92.7m (ignored with --cpu)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--share", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if not args.cpu and not torch.cuda.is_available():
        print("gpu.py: no CUDA device; use --cpu for the dry mode", file=sys.stderr)
        return 2
    name = "cpu" if args.cpu else torch.cuda.get_device_name(0)
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), 1.0 if args.cpu else 989.0)
    seconds = args.seconds or (1.0 if args.cpu else 8.0)
    skip = set(filter(None, args.skip.split(",")))
    ONLY[:] = [p for p in args.presets.split(",") if p]
    if args.cpu:
        torch.set_num_threads(1)
    else:  # as a trial sets them: cudnn.benchmark and TF32
        from raydiff.training.state import configure_backends

        configure_backends(torch.device("cuda"))
    t0 = time.perf_counter()
    train_rows = [] if "train" in skip else bench_training(args.cpu, seconds, peak)
    eval_rows = [] if "eval" in skip else bench_eval(args.cpu)
    pack_rows = [] if "pack" in skip else bench_packing(args.cpu, seconds * (3 if not args.cpu else 1))
    info = {
        "command": "python -m benchmarks.gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": name, "peak_tflops": peak,
        "torch": torch.__version__, "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    text = markdown(info, train_rows, eval_rows, pack_rows)
    print(text)
    out = args.out or (None if args.cpu else str(ROOT / "benchmarks" / "RESULTS-gpu.md"))
    if out:
        Path(out).write_text(text)
        Path(out).with_suffix(".json").write_text(json.dumps({"info": info, "train": train_rows, "eval": eval_rows, "pack": pack_rows}, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
