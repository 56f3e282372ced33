#!/usr/bin/env bash
# Regenerates every committed result folder (see results/README.md for the scale of each, the
# machine and its runtime). Each run writes its own manifest.json (commit, settings, machine,
# timings). uniform, phase and correlated were trained on one NVIDIA H200 (1-2 min each
# there); on a 2-core CPU they take hours (--dry-run prints the estimate). sparsity took about an hour
# on the 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { echo "=== $*"; python -m "$@" --no-progress --overwrite; }
# Every training run uses the recipe the convergence study chose (results/convergence/best.md).
# --recipe committed is --schedule cosine --anneal-fraction 0.1 --lr 3e-3 --weight-decay 0.
RECIPE="--recipe committed"
# intro 240 seeds, sparsity 20 per part and 60 for its ReLU part: what the findings' power
# calculations asked for (results/README.md).
run experiments.intro --preset paper $RECIPE --n-seeds 240 --out results/intro
run experiments.sparsity --preset paper $RECIPE --n-seeds 20 --part-seeds relu=60 --out results/sparsity
run experiments.phase --preset paper $RECIPE --out results/phase
run experiments.correlated --preset paper $RECIPE --out results/correlated
run experiments.uniform --preset notebook $RECIPE --out results/uniform
# The same claim runs trained full precision first (the recipe chosen for ternary over both
# convergence studies): the findings' third view.
run experiments.intro --preset paper --recipe fp_first --out results/intro_fp
run experiments.correlated --preset paper --recipe fp_first --out results/correlated_fp
run experiments.sparsity --preset paper --recipe fp_first --out results/sparsity_fp
run experiments.uniform --preset notebook --recipe fp_first --out results/uniform_fp
# A second recipe per trained view (the findings' recipe factor), where trained.
run experiments.intro --preset paper --recipe paper --out results/intro_paper
run experiments.sparsity --preset paper --recipe paper --out results/sparsity_paper
run experiments.intro --preset paper --recipe paper --fp-fraction 0.5 --out results/intro_fp_paper
run experiments.correlated --preset paper --recipe paper --out results/correlated_paper
run experiments.correlated --preset paper --recipe paper --fp-fraction 0.5 --out results/correlated_fp_paper
run experiments.uniform --preset notebook --recipe paper --steps 20000 --out results/uniform_paper
run experiments.sparsity --preset paper --recipe paper --fp-fraction 0.5 --out results/sparsity_fp_paper
run experiments.uniform --preset notebook --recipe paper --fp-fraction 0.5 --out results/uniform_fp_paper
python -m experiments.representable --out results/representable --overwrite
# The per-feature ternary and binary lattices for the run that trains those kinds.
python -m experiments.representable --runs intro --lattices ternary_per_feature binary \
    --no-phase-intro --out results/representable_lattices --overwrite
# gamma, non-zeros per column, D* and |cos| of every source against the best-known solutions.
python -m experiments.mechanism
# The neuron models keep the paper's own recipe (the convergence study chose on the tied model).
run experiments.privileged --preset quick --steps 30000 --out results/privileged
run experiments.computation --preset quick --out results/computation
# Their second recipe (the findings' recipe factor): the committed one.
run experiments.computation --preset quick --recipe committed --out results/computation_committed
run experiments.privileged --preset quick --steps 10000 --recipe committed --out results/privileged_committed
# The convergence study: about 50 min on an idle 2-core CPU; its four training routes
# (from scratch, full precision first, + learned rotation, relaxation): about 1 h shared.
run experiments.convergence --preset full --out results/convergence
run experiments.convergence --preset fp --out results/convergence_fp
run experiments.convergence --preset fp_uniform --out results/convergence_fp_uniform
# The recipe per kind over both studies (the first section of results/convergence/best.md).
python -m experiments.convergence --out results/convergence --choose-with results/convergence_fp
python -m experiments.findings
# On a GPU: python -m experiments.benchmark --reference --out results/benchmark/h200
#           python -m experiments.benchmark --scaling --scaling-out results/benchmark/h200
for name in intro sparsity uniform correlated phase convergence convergence_fp privileged computation \
        intro_fp correlated_fp sparsity_fp intro_paper intro_fp_paper sparsity_paper \
        computation_committed privileged_committed uniform_fp correlated_paper correlated_fp_paper \
        uniform_paper sparsity_fp_paper uniform_fp_paper; do
    python -m experiments.explore "results/$name" --plotlyjs-dir results --screenshot
done
