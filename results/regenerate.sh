#!/usr/bin/env bash
# Regenerates every committed result folder at the scale this project's 2-core CPU finishes
# (see results/README.md for the scale of each and its runtime). Each run writes its own
# manifest.json (commit, settings, machine, timings). On a GPU/TPU drop the --preset and
# --seeds/--steps overrides to get the paper-scale runs.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { echo "=== $*"; python -m "$@" --no-progress --overwrite; }
# intro and sparsity use the recipe the convergence study chose (results/convergence/best.md).
RECIPE="--schedule cosine --anneal-fraction 0.1 --lr 3e-3 --weight-decay 0"
run experiments.intro --preset paper $RECIPE --out results/intro
run experiments.sparsity --preset quick --n-seeds 10 --steps 10000 $RECIPE --out results/sparsity
run experiments.phase --preset quick --n-seeds 6 --out results/phase
run experiments.correlated --preset quick --n-seeds 10 --out results/correlated
run experiments.uniform --preset quick --n-seeds 3 --steps 6000 --out results/uniform
python -m experiments.representable --out results/representable
# The convergence study (issue 10): about 50 min on an idle 2-core CPU.
run experiments.convergence --preset full --out results/convergence
python -m experiments.findings
for name in intro sparsity uniform correlated phase convergence; do
    python -m experiments.explore "results/$name" --screenshot
done
