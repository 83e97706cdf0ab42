"""`raydiff sweep SPACE --dry-run`: the resolved trial table, without starting (or importing) Ray."""

from __future__ import annotations

import json
import sys

from raydiff.config import SearchSpace
from raydiff.location import locate
from raydiff.models import model_name, param_count


def plan_rows(space: SearchSpace) -> list[dict]:
    res = space.sweep.resources
    rows = []
    for i, exp in enumerate(space.experiments()):
        rows.append({
            "#": i, "dataset": exp.data.dataset, "N": exp.data.n_train, "model": model_name(exp.model),
            "params": param_count(exp.model, exp.data), "B": exp.batch, "lr": exp.train.lr,
            "objective": exp.diffusion.objective, "resources": f"{res.cpu:g} CPU, {res.gpu:g} GPU",
            "budget_steps": exp.budget_steps, "eval_every": exp.eval_every_steps,
        })  # fmt: skip
    return rows


def config_json(exp) -> str:
    """A trial's resolved config as trials.parquet's `config` column holds it."""
    return json.dumps(exp.to_dict(), sort_keys=True)


def print_json(space: SearchSpace, out=None) -> None:
    """`--dry-run --json`: one line per trial (an Optuna search: its base trial), for scripts."""
    out = out or sys.stdout
    for exp in space.experiments():
        print(config_json(exp), file=out)


def print_plan(space: SearchSpace, storage: str | None = None, name: str | None = None, out=None) -> None:
    out = out or sys.stdout  # looked up per call: a default bound at import outlives a redirect
    rows = plan_rows(space)
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
