"""`raydiff sweep SPACE --dry-run`: the resolved trial table and what it will cost (tune/cost.py),
without starting (or importing) Ray."""

from __future__ import annotations

import dataclasses
import json
import sys

from raydiff.config import SearchSpace
from raydiff.errors import UserError
from raydiff.location import SweepLocation, locate
from raydiff.models import model_name, param_count
from raydiff.tune.capacity import NodeType, concurrency, node_types_of_file, request_for, slots, where
from raydiff.tune.cost import H100_BF16_TFLOPS, UTILIZATION, assumptions_text, cost_rows, sweep_cost


def plan_rows(space: SearchSpace, types: list[NodeType] | None = None) -> list[dict]:
    """One row per trial: its settings, its request and (with a cluster's node types) where it can run."""
    rows = []
    for i, exp in enumerate(space.experiments()):
        params = param_count(exp.model, exp.data)
        req = request_for(space.sweep, exp.model.preset, params)
        row = {
            "#": i, "dataset": exp.data.dataset, "N": exp.data.n_train, "model": model_name(exp.model),
            "params": params, "B": exp.batch, "lr": exp.train.lr, "objective": exp.diffusion.objective,
            "resources": req.text(), "budget_steps": exp.budget_steps, "eval_every": exp.eval_every_steps,
        }  # fmt: skip
        if types is not None:
            row["runs_on"] = ",".join(where(req, types)) or "NOWHERE"
        rows.append(row)
    return rows


def cluster_line(space: SearchSpace, types: list[NodeType], source: str) -> str:
    """'up to K trials at once' from a cluster file alone, with where the trials cannot run."""
    exps = space.experiments() if space.search is None else space.extremes()
    reqs = [request_for(space.sweep, e.model.preset, param_count(e.model, e.data)) for e in exps]
    homeless = sorted({r.text() for r in reqs if not where(r, types)})
    k = slots(reqs[0], types) if space.search is not None else concurrency(reqs, types)
    nodes = ", ".join(f"{t.name} ×{t.max_nodes} ({t.resources.get('CPU', 0):g} CPU, {t.resources.get('GPU', 0):g} GPU)" for t in types)
    text = f"on {source} ({nodes}): up to {k} trials at once"
    if homeless:
        text += f"; no node type fits {', '.join(homeless)}: those trials would never start"
    return text


def config_json(exp) -> str:
    """A trial's resolved config as trials.parquet's `config` column holds it."""
    return json.dumps(exp.to_dict(), sort_keys=True)


def print_json(space: SearchSpace, out=None) -> None:
    """`--dry-run --json`: one line per trial (an Optuna search: its base trial), for scripts."""
    out = out or sys.stdout
    for exp in space.experiments():
        print(config_json(exp), file=out)


def print_cost_json(
    space: SearchSpace, tau: float | None = None, tflops: float = H100_BF16_TFLOPS, utilization: float = UTILIZATION, out=None
) -> None:
    """`--dry-run --json-cost`: one line per trial (its index and cost, tune/cost.TrialCost.to_dict),
    then one line with the sweep's totals ({"total": …})."""
    out = out or sys.stdout
    prior = space.sweep.budget_planner.prior
    if tau is None and prior is None:
        raise UserError("needs an onset to assume: --tau STEPS, or sweep.budget_planner.prior in the space", key="--json-cost")
    cost = sweep_cost(space.experiments(), tau, prior)
    for i, t in enumerate(cost.trials):
        print(json.dumps({"#": i, **t.to_dict(tflops, utilization)}), file=out)
    total = {
        "trials": len(cost.trials), "training_flops": cost.training, "measurement_flops": cost.measurement,
        "measurement_total_flops": cost.measured, "total_flops": cost.total, "measurement_share": cost.share,
        "gpu_hours": sum(t.gpu_hours(tflops, utilization) for t in cost.trials), "gpu_tflops": tflops,
        "figures_off_loop_flops": cost.figures_off_loop, "snapshot_bytes": cost.snapshot_bytes,
        "gpu_utilization": utilization, "tau": tau, "tau_source": "--tau" if tau is not None else "prior",
        "prior": None if prior is None else dataclasses.asdict(prior),
    }  # fmt: skip
    print(json.dumps({"total": total}), file=out)


def print_cost(space: SearchSpace, tau: float | None = None, tflops: float = H100_BF16_TFLOPS, utilization: float = UTILIZATION, out=None) -> None:
    """The cost table under the trial table: per trial and in total (an Optuna search: its base trial)."""
    out = out or sys.stdout
    prior = space.sweep.budget_planner.prior
    print(file=out)
    if tau is None and prior is None:
        print("Cost: this space states no onset to assume (sweep.budget_planner.prior); give --tau STEPS to see it.", file=out)
        return
    cols, rows = cost_rows(sweep_cost(space.experiments(), tau, prior), tflops, utilization)
    for line in assumptions_text(tau, prior, tflops, utilization):
        print(line, file=out)
    if space.search is not None:
        print(f"An Optuna search: the base trial's cost; its {space.search.num_samples} trials vary around it.", file=out)
    widths = [max(len(r[i]) for r in [cols, *rows]) for i in range(len(cols))]
    for r in [cols, *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)), file=out)


def check_plan(space: SearchSpace, loc: SweepLocation) -> None:
    """What a real run would refuse about its results folder, said by the dry run too: a sweep of
    that name already there. Local storage only: the dry run plans offline, and never probes a store."""
    if "://" in loc.storage:
        return
    from raydiff.preflight import check_sweep_name

    check_sweep_name(loc, resume=False)


def print_plan(
    space: SearchSpace, storage: str | None = None, name: str | None = None, out=None, cluster: str | None = None,
    tau: float | None = None, tflops: float = H100_BF16_TFLOPS, utilization: float = UTILIZATION,
) -> None:  # fmt: skip
    out = out or sys.stdout  # looked up per call: a default bound at import outlives a redirect
    types = node_types_of_file(cluster) if cluster else None
    rows = plan_rows(space, types)
    if space.search is not None:  # an Optuna search: its axes, then the base trial it varies
        s = space.search
        print(f"Optuna search ({s.sampler}): {s.num_samples} trials, "
              + ", ".join(f"{o.mode}imize {o.metric}" for o in s.objective), file=out)  # fmt: skip
        for k, d in s.axes.items():
            print(f"  {k}: {d.kind} {list(d.values)}", file=out)
    cols = list(rows[0])
    fmt = {"lr": lambda v: f"{v:.0e}", "params": lambda v: f"{v:,}"}
    cells = [cols] + [[fmt.get(c, str)(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)), file=out)
    loc = locate(space, storage, name)
    what = f"{space.search.num_samples} trials drawn by Optuna around the base trial above" if space.search else f"{len(rows)} trials ({space.sweep.mode} mode)"
    print(f"{what}; results would go to {loc.uri}", file=out)
    if types is not None:
        print(cluster_line(space, types, cluster), file=out)
    print_cost(space, tau, tflops, utilization, out)
