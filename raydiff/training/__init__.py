"""The parts of one trial's training that `raydiff.trial.train` — the loop — puts together, one
module per concept: `schedule` (when to evaluate), `state` (what is checkpointed), `step` (one
optimizer step), `reports` (what each report carries: the report contract), `refine` (narrowing
τ_mem's bracket from snapshots). `schedule` and `reports` are pure (no torch): the dry run's cost
model runs them forward."""
