"""Throughput of the compiled sweep step on fixed workloads, with the machine's floors.

Question: how many instance-steps per second does bitjax train, against the paper's PyTorch
notebook, and what bounds it? Each workload is the tied ReLU model, AdamW, batch 1024, fresh
data every step, every instance with its own data stream (as the notebook), dense weights.

Command:  python -m experiments.benchmark            (table on stdout)
          python -m experiments.benchmark --json     (machine-readable)
          python -m experiments.benchmark --reference --repeats 3 --out results/benchmark
                                          (beside the PyTorch loop, medians of three
                                          alternating rounds: the committed table)
          python -m experiments.benchmark --workload uniform_400x30_i40 --steps 200
          python -m experiments.benchmark --kind ternary --fp-first   (the two-phase
                                                      schedule's price against --kind ternary)
          python -m experiments.benchmark --scaling  (compile time and throughput against the
                                                      instance count, into results/benchmark/)

Runtime: about 1 minute on a 2-core CPU, 2.5 minutes with --reference --repeats 3 (the
committed table: bitjax 8.7x-24.5x the PyTorch loop on that CPU, medians of three rounds);
42 s with --reference on one NVIDIA H200
(results/benchmark/h200: bitjax 55x-1,829x the notebook's CPU figures and 3.2x-100x the
PyTorch loop timed on the same GPU).
Paper figure: none; this is the engineering claim "one compiled step trains the whole sweep".

Floors printed per workload (measured on this machine by microbenchmarks, not assumed):
  rng: uniforms the step draws / this machine's uniform-draw rate (the hash drawn and summed
       in one fused loop, as the step draws it into its consumer, nothing written to
       memory) -> the most steps/s that drawing the data alone allows;
  flop: the step's matmul FLOPs (two forward and three backward matmuls, 10 B n m per
       instance) / this machine's batched-matmul rate -> the most steps/s the matmuls allow;
  bytes: the step's minimal elementwise traffic (the [instances, batch, features] arrays it
       must write and read at least once: x, the reconstruction and its gradient) / this
       machine's streaming bandwidth to memory. On a CPU the trainer keeps those arrays in
       cache (instance groups, bitjax.train.memory.cache_group), so this bounds a step whose
       arrays go to memory, not the grouped step.

Memory per instance: "state bytes" is the training state kept between chunks (weights, Adam
moments, loss history); "step bytes" is the working memory XLA's memory analysis gives for
one compiled chunk, per instance on a device. A sweep whose working memory exceeds what a
device has free trains in groups of instances inside the same program
(bitjax.train.trainer.Trainer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Reference: the paper's PyTorch notebook on a quiet 2-core CPU, instance-steps/s (timed
#: with its own Model / generate_batch / optimize cells).
REFERENCE_INSTANCE_STEPS = {
    "intro_5x2_i10": 6_900,
    "sweep_20x5_i400": 2_700,
    "nb_100x20_i20": 660,
    "uniform_400x30_i40": 80,
}


@dataclass(frozen=True)
class Workload:
    name: str
    n_features: int
    n_hidden: int
    n_instances: int


WORKLOADS = {
    w.name: w
    for w in (
        Workload("intro_5x2_i10", 5, 2, 10),
        Workload("sweep_20x5_i400", 20, 5, 400),
        Workload("nb_100x20_i20", 100, 20, 20),
        Workload("uniform_400x30_i40", 400, 30, 40),
    )
}


def workload_config(w: Workload, *, batch_size: int = 1024, chunk: int = 100,
                    data_sharing: str = "instance", rng_impl: str | None = None,
                    kinds=("dense",), fp_first: bool = False):
    """The workload as a sweep. ``fp_first``: the two-phase schedule, its switch at the
    start of the second chunk (the first history point), which is warm-up too
    (:func:`warmup_chunks`), so the timed chunks are its quantized phase: the price of the
    schedule per step against the same kind trained without it."""
    from bitjax.config import SweepConfig

    per_kind = max(1, w.n_instances // len(kinds))
    probs = tuple(float(p) for p in np.geomspace(1.0, 0.01, per_kind))
    kw = {} if rng_impl is None else {"rng_impl": rng_impl}
    return SweepConfig(
        n_features=w.n_features, n_hidden=w.n_hidden, kind=tuple(kinds), seed=(0,),
        feature_probability=probs, importance=(1.0,), steps=chunk * 1000,
        batch_size=batch_size, chunk_size=chunk, history_every=chunk,
        data_sharing=data_sharing, fp_fraction=1 / 1000 if fp_first else 0.0, **kw)


def time_chunks(run_chunk: Callable[[], None], *, min_seconds: float, max_chunks: int,
                clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Durations of successive ``run_chunk()`` calls: at least 3, then until ``min_seconds``
    have passed in all or ``max_chunks`` were timed."""
    times: list[float] = []
    t_start = clock()
    while len(times) < max_chunks and (len(times) < 3 or clock() - t_start < min_seconds):
        t0 = clock()
        run_chunk()
        times.append(clock() - t0)
    return times


def chunk_rates(times: list[float], steps: int) -> tuple[float, float, float]:
    """``(median, slowest, fastest)`` steps/s of chunks of ``steps`` steps that took ``times``.

    The median chunk's rate is the one reported, so a burst of work from another process
    during one chunk does not move it.
    """
    rates = steps / np.asarray(times, dtype=np.float64)
    return float(np.median(rates)), float(rates.min()), float(rates.max())


def warmup_chunks(cfg) -> int:
    """Chunks run before the timing: one; with a dense phase also the chunk that starts
    with the switch to the lattice (at the first history point, :func:`workload_config`),
    a once-per-run cost that is not a step's."""
    return 2 if cfg.has_fp_phase else 1


def time_workload(cfg, *, min_seconds: float = 3.0, max_chunks: int = 50) -> dict:
    """Compile once, warm up (:func:`warmup_chunks`), then time chunks one by one for
    ``min_seconds``."""
    import jax

    from bitjax.train.memory import chunk_bytes
    from bitjax.train.trainer import Trainer, clear_programs

    clear_programs()  # compile_s is a fresh compile even if this process built it before
    trainer = Trainer(cfg)
    holder = {"state": trainer.init_state()}
    t0 = time.perf_counter()
    fn = trainer.compiled_chunk(cfg.chunk_size)
    compile_s = time.perf_counter() - t0

    def run_chunk():
        holder["state"] = fn(holder["state"], trainer.arrays, trainer.streams)
        jax.block_until_ready(holder["state"])

    for _ in range(warmup_chunks(cfg)):
        run_chunk()
    times = time_chunks(run_chunk, min_seconds=min_seconds, max_chunks=max_chunks)
    steps_s, lo, hi = chunk_rates(times, cfg.chunk_size)
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(holder["state"]))
    step_bytes = chunk_bytes(fn)
    return {"steps_per_s": steps_s, "instance_steps_per_s": steps_s * trainer.n_instances,
            "steps_per_s_range": [lo, hi],
            "chunks_timed": len(times), "compile_s": compile_s,
            "n_instances": trainer.n_instances,
            "state_bytes_per_instance": state_bytes / trainer.n_padded,
            "step_bytes_per_instance": (None if step_bytes is None
                                        else step_bytes / trainer.instances_per_device)}


# ---- floors ------------------------------------------------------------------------------


def _rate(fn, *args, reps: int = 5) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) / reps


def machine_rates(rng_impl: str = "hash") -> dict:
    """Uniforms/s, batched-matmul FLOP/s and streaming bytes/s of one device under XLA."""
    import jax
    import jax.numpy as jnp

    from bitjax.data import hash_uniform

    shape = (16, 1024, 400)
    size = int(np.prod(shape))
    # Drawn and summed in one fused loop (the hash fuses into its consumer in the step; a
    # materialised array would time the memory writes instead).
    if rng_impl == "hash":
        draw = jax.jit(lambda k: jnp.sum(hash_uniform(k, shape)))
        key = jnp.array([1, 2], jnp.uint32)
    else:
        draw = jax.jit(lambda k: jnp.sum(jax.random.uniform(k, shape)))
        key = jax.random.key(0, impl=rng_impl)
    uniforms_s = size / _rate(draw, key)

    a = jnp.ones((40, 1024, 400), jnp.float32)
    b = jnp.ones((40, 400, 30), jnp.float32)
    mm = jax.jit(lambda a, b: jnp.einsum("ibn,inm->ibm", a, b))
    flops_s = 2 * 40 * 1024 * 400 * 30 / _rate(mm, a, b)

    x = jnp.ones((64, 1024, 400), jnp.float32)
    stream = jax.jit(lambda x: x * 1.5 + 0.5)
    bytes_s = 2 * x.nbytes / _rate(stream, x)
    return {"uniforms_per_s": uniforms_s, "flops_per_s": flops_s, "bytes_per_s": bytes_s}


def floors(cfg, rates: dict) -> dict:
    """Upper bounds on steps/s from drawing, matmuls and minimal elementwise traffic."""
    from bitjax.config import build_instances

    inst = build_instances(cfg)
    i, b, n, m = inst.n, cfg.batch_size, cfg.n_features, cfg.n_hidden
    streams = len(inst.stream_seed) if cfg.data_sharing == "seed" else i
    uniforms = streams * b * n
    # Five [b, n] x [n, m]-sized matmuls: two forward (h = x W^T, W^T h), three backward
    # (dh = g W, dW += h^T g, dW += dh^T x); 2 b n m FLOPs each.
    flops = 10 * i * b * n * m
    # x written once and read by the loss, the reconstruction error read by the backward.
    traffic = 3 * 4 * i * b * n
    return {
        "uniforms_per_step": uniforms,
        "flops_per_step": flops,
        "bytes_per_step": traffic,
        "rng_floor_steps_s": rates["uniforms_per_s"] / uniforms,
        "flop_floor_steps_s": rates["flops_per_s"] / flops,
        "bytes_floor_steps_s": rates["bytes_per_s"] / traffic,
    }


#: The fields of a row that are measured anew in every repeat (their median is reported, the
#: runs beside it as ``<field>_runs``).
REPEATED = ("steps_per_s", "instance_steps_per_s", "compile_s", "ratio_vs_reference",
            "torch_instance_steps_per_s", "ratio_vs_torch_here")


def run_benchmark(names, *, steps: int, data_sharing: str, rng_impl: str | None,
                  min_seconds: float, reference: bool = False, kind: str = "dense",
                  fp_first: bool = False, repeats: int = 1) -> list[dict]:
    """One row per workload. With ``repeats`` > 1 every workload is timed that many times,
    the rounds alternating (all workloads, bitjax then the PyTorch loop for each, then the
    next round), and each measured field (:data:`REPEATED`) is the median over the rounds
    (the ratio to the PyTorch loop: the median of each round's ratio), each round's value
    kept in ``<field>_runs``."""
    rounds = [_benchmark_round(names, steps=steps, data_sharing=data_sharing,
                               rng_impl=rng_impl, min_seconds=min_seconds,
                               reference=reference, kind=kind, fp_first=fp_first)
              for _ in range(repeats)]
    if repeats == 1:
        return rounds[0]
    rows = []
    for i in range(len(names)):
        runs = [rnd[i] for rnd in rounds]
        row = {**runs[0], "repeats": repeats}
        for f in REPEATED:
            if f in row:
                row[f"{f}_runs"] = [r[f] for r in runs]
                row[f] = float(np.median(row[f"{f}_runs"]))
        rows.append(row)
        print("median " + _fmt_row(row), file=sys.stderr, flush=True)
    return rows


def _benchmark_round(names, *, steps: int, data_sharing: str, rng_impl: str | None,
                     min_seconds: float, reference: bool, kind: str,
                     fp_first: bool) -> list[dict]:
    import jax

    rates = machine_rates(rng_impl or "hash")
    rows = []
    for name in names:
        w = WORKLOADS[name]
        cfg = workload_config(w, chunk=steps, data_sharing=data_sharing, rng_impl=rng_impl,
                              kinds=(kind,), fp_first=fp_first)
        r = time_workload(cfg, min_seconds=min_seconds)
        ref = REFERENCE_INSTANCE_STEPS[name]
        measured = {}
        if reference:  # the PyTorch loop timed here, in this run
            from experiments.torch_reference import time_reference

            t = time_reference(w.n_features, w.n_hidden, w.n_instances,
                               steps=max(5, min(200, int(3 * ref / w.n_instances))))
            measured = {"torch_instance_steps_per_s": t["instance_steps_per_s"],
                        "ratio_vs_torch_here": r["instance_steps_per_s"]
                        / t["instance_steps_per_s"], "torch": t["torch"],
                        "torch_device": t["device"]}
        rows.append({"workload": name, **r, **floors(cfg, rates),
                     "reference_instance_steps_per_s": ref,
                     "ratio_vs_reference": r["instance_steps_per_s"] / ref, **measured,
                     "data_sharing": data_sharing, "rng_impl": cfg.rng_impl, "kind": kind,
                     "fp_first": fp_first,
                     "backend": jax.default_backend(),
                     "device": jax.devices()[0].device_kind,
                     "n_devices": jax.device_count()})
        print(_fmt_row(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _fmt_row(r: dict) -> str:
    here = (f" {r['torch_instance_steps_per_s']:>10,.0f} {r['ratio_vs_torch_here']:>6.1f}x"
            if "torch_instance_steps_per_s" in r else "")
    return (f"{r['workload']:<20} {r['steps_per_s']:>9,.0f} {r['instance_steps_per_s']:>12,.0f}"
            f" {r['reference_instance_steps_per_s']:>9,} {r['ratio_vs_reference']:>6.1f}x"
            f" {r['compile_s']:>8.2f} {r['rng_floor_steps_s']:>9,.0f}"
            f" {r['flop_floor_steps_s']:>9,.0f} {r['bytes_floor_steps_s']:>9,.0f}{here}")


HEADER = (f"{'workload':<20} {'steps/s':>9} {'inst-steps/s':>12} {'ref':>9} {'ratio':>7}"
          f" {'compile':>8} {'rng-floor':>9} {'flop-floor':>9} {'byte-floor':>9}"
          f" {'torch-here':>10} {'ratio':>7}")


SCALING_COUNTS = (10, 30, 100, 300, 1000, 3000, 10000)


def _compile_seconds(cfg) -> float:
    from bitjax.train.trainer import Trainer, clear_programs

    clear_programs()  # a fresh compile, not the program the timed run already built
    trainer = Trainer(cfg)
    trainer.compiled_chunk(cfg.chunk_size)
    return trainer.compile_seconds


def run_scaling(out: Path, counts=SCALING_COUNTS, *, steps: int = 5,
                min_seconds: float = 2.0) -> list[dict]:
    """Compile time and throughput of sweep_20x5 against the number of instances."""
    from bitjax.report import plots
    from bitjax.store import files as store_files

    rows = []
    for count in counts:
        w = Workload(f"sweep_20x5_i{count}", 20, 5, count)
        cfg = workload_config(w, chunk=steps)
        r = time_workload(cfg, min_seconds=min_seconds, max_chunks=20)
        # Compile time: the fastest of three fresh compiles (the others only add noise).
        r["compile_s"] = min([r["compile_s"]] + [_compile_seconds(cfg) for _ in range(2)])
        rows.append({"n_instances": r["n_instances"], "compile_s": r["compile_s"],
                     "steps_per_s": r["steps_per_s"],
                     "instance_steps_per_s": r["instance_steps_per_s"],
                     "state_bytes_per_instance": r["state_bytes_per_instance"]})
        print(f"{count:>6} instances: compile {r['compile_s']:.2f} s, "
              f"{r['instance_steps_per_s']:,.0f} instance-steps/s", file=sys.stderr, flush=True)
    store_files.write_csv(out / "scaling.csv", rows)
    store_files.write_json(out / "scaling.json", {
        "environment": store_files.environment(), "git": store_files.git_commit(),
        "settings": {"workload": "sweep_20x5", "steps_per_call": steps,
                     "min_seconds": min_seconds, "counts": list(counts)},
        "rows": rows})
    fig, axes = plots.new_figure(1, 2, size=(4.2, 3.2))
    n = [r["n_instances"] for r in rows]
    axes[0, 0].plot(n, [r["compile_s"] for r in rows], "-o")
    axes[0, 0].set_ylabel("compile time (s)")
    axes[0, 0].set_ylim(0, None)
    axes[0, 1].plot(n, [r["instance_steps_per_s"] for r in rows], "-o")
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_ylabel("instance-steps / s")
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlabel("instances in the sweep (n=20, m=5, batch 1024)")
    import jax

    fig.suptitle(f"One compiled program for 10 to {max(n):,} instances "
                 f"({jax.device_count()} x {jax.devices()[0].device_kind})", fontsize=9)
    fig.tight_layout()
    plots.save(fig, out / "scaling")
    return rows


def main(argv=None) -> int:
    from experiments._runtime import start_tool

    if (code := start_tool()) is not None:  # one CPU device per core, as the experiments
        return code
    ap = argparse.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=list(WORKLOADS), action="append",
                    help="workload(s) to time (default: all four)")
    ap.add_argument("--steps", type=int, default=100, help="steps per compiled call")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="timing per workload")
    ap.add_argument("--data-sharing", choices=("instance", "seed"), default="instance",
                    help="instance: independent data per instance (as the reference); "
                         "seed: one draw shared by all instances of a seed")
    ap.add_argument("--rng-impl", default=None, help="JAX PRNG implementation")
    ap.add_argument("--kind", default="dense", metavar="KIND",
                    help="the weight kind of every instance (default dense; see bitjax.KINDS)")
    ap.add_argument("--fp-first", action="store_true",
                    help="train with the two-phase schedule (dense, then rotated onto the "
                         "lattice and quantized), switching after the warm-up chunk: the "
                         "timed chunks are its quantized phase")
    ap.add_argument("--repeats", type=int, default=1,
                    help="time every workload this many times in alternating rounds and "
                         "report the medians (each round's values kept in the JSON)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--reference", action="store_true",
                    help="also time the PyTorch reference loop here (needs torch) and give "
                         "the ratio measured in this run")
    ap.add_argument("--out", type=Path, default=None,
                    help="also write benchmark.json and benchmark.md (a table) into this folder")
    ap.add_argument("--scaling", action="store_true",
                    help="instead: compile time and throughput against the instance count "
                         "(sweep_20x5, 10 to 10,000 instances) into --scaling-out")
    ap.add_argument("--scaling-out", type=Path, default=Path("runs/benchmark"),
                    help="folder for scaling.csv, scaling.json (commit, machine, settings) "
                         "and scaling.png/pdf (default runs/benchmark; the committed "
                         "results are written only with an explicit --scaling-out "
                         "results/benchmark)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        print(f"error: --{'steps' if args.steps < 1 else 'repeats'} must be >= 1",
              file=sys.stderr)
        return 2
    from bitjax.layers import KINDS

    if args.kind not in KINDS:
        print(f"error: --kind {args.kind!r} is not a kind; choose from {', '.join(KINDS)}",
              file=sys.stderr)
        return 2
    if args.scaling:
        run_scaling(args.scaling_out)
        return 0
    import jax

    print(f"{jax.device_count()} {jax.default_backend()} device(s): "
          f"{jax.devices()[0].device_kind}", file=sys.stderr)
    print(HEADER, file=sys.stderr)
    rows = run_benchmark(args.workload or list(WORKLOADS), steps=args.steps,
                         data_sharing=args.data_sharing, rng_impl=args.rng_impl,
                         min_seconds=args.min_seconds, reference=args.reference,
                         kind=args.kind, fp_first=args.fp_first, repeats=args.repeats)
    if args.json:
        print(json.dumps(rows, indent=2))
    if args.out:
        write_tables(rows, args.out)
    return 0


def _bytes(n) -> str:
    return "not measured" if n is None else f"{n:,.0f}"


def write_tables(rows: list[dict], out: Path) -> None:
    """``benchmark.json`` (every field) and ``benchmark.md`` (the table) into ``out``."""
    from bitjax.store import files as store_files

    git = store_files.git_commit()
    store_files.write_json(out / "benchmark.json", {"environment": store_files.environment(),
                                                    "git": git, "rows": rows})
    import jax

    devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    for r in rows:
        r.setdefault("devices", devices)
    repeats = max(int(r.get("repeats", 1)) for r in rows)
    lines = [
        f"Devices: {devices} (JAX {jax.__version__}, backend {jax.default_backend()}); "
        f"{store_files.code_commit_words(git)}."
        + (f" Each figure is the median of {repeats} alternating rounds (every round's in "
           "benchmark.json)." if repeats > 1 else ""),
        "",
        "| workload | steps/s | instance-steps/s | reference | ratio | compile (s) | "
        "rng floor (steps/s) | flop floor | byte floor | torch here (inst-steps/s, device) | "
        "ratio here | state bytes / instance | step bytes / instance |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        here = (f"{r['torch_instance_steps_per_s']:,.0f} ({r.get('torch_device', 'cpu')}) | "
                f"{r['ratio_vs_torch_here']:.1f}x"
                if "torch_instance_steps_per_s" in r else "not measured | ")
        lines.append(
            f"| {r['workload']} | {r['steps_per_s']:,.0f} | {r['instance_steps_per_s']:,.0f} | "
            f"{r['reference_instance_steps_per_s']:,} | {r['ratio_vs_reference']:.1f}x | "
            f"{r['compile_s']:.2f} | {r['rng_floor_steps_s']:,.0f} | "
            f"{r['flop_floor_steps_s']:,.0f} | {r['bytes_floor_steps_s']:,.0f} | {here} | "
            f"{r['state_bytes_per_instance']:,.0f} | {_bytes(r.get('step_bytes_per_instance'))} |")
    store_files.write_text(out / "benchmark.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
