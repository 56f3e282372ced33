"""The benchmark runs, reports every field it promises, computes sane floors, and times
chunks the way it says (median chunk rate, at least three chunks, stops on time)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import benchmark

ROOT = Path(__file__).resolve().parents[2]


class _FakeClock:
    """A clock that advances only when a "chunk" runs, by the given durations in turn."""

    def __init__(self, durations):
        self.now, self.durations = 0.0, list(durations)

    def __call__(self) -> float:
        return self.now

    def chunk(self) -> None:
        self.now += self.durations.pop(0)


def test_time_chunks_times_three_then_stops_on_time_or_count():
    clock = _FakeClock([1.0] * 10)
    assert benchmark.time_chunks(clock.chunk, min_seconds=0.0, max_chunks=50,
                                 clock=clock) == [1.0] * 3  # at least three, even if late
    clock = _FakeClock([1.0] * 10)
    assert len(benchmark.time_chunks(clock.chunk, min_seconds=4.5, max_chunks=50,
                                     clock=clock)) == 5  # until 4.5 s have passed
    clock = _FakeClock([1.0] * 10)
    assert len(benchmark.time_chunks(clock.chunk, min_seconds=100.0, max_chunks=4,
                                     clock=clock)) == 4


def test_chunk_rates_report_the_median_chunk_not_the_mean():
    # one chunk slowed 10x by another process: the median ignores it, the mean would not
    median, slowest, fastest = benchmark.chunk_rates([0.1, 0.1, 1.0, 0.1, 0.2], steps=100)
    assert median == pytest.approx(1000.0)
    assert (slowest, fastest) == pytest.approx((100.0, 1000.0))
    assert np.mean(100 / np.array([0.1, 0.1, 1.0, 0.1, 0.2])) < 800


def test_benchmark_rows_and_tables(tmp_path, capsys):
    rc = benchmark.main(["--workload", "intro_5x2_i10", "--steps", "20", "--min-seconds",
                         "0.05", "--json", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    (row,) = rows
    assert row["workload"] == "intro_5x2_i10" and row["n_instances"] == 10
    for k in ("steps_per_s", "instance_steps_per_s", "compile_s", "rng_floor_steps_s",
              "flop_floor_steps_s", "bytes_floor_steps_s", "ratio_vs_reference"):
        assert row[k] > 0, k
    # Independent data: one uniform per feature, example and instance.
    assert row["uniforms_per_step"] == 10 * 1024 * 5
    # Five matmuls of 2 * batch * n * m FLOPs per instance (2 forward, 3 backward).
    assert row["flops_per_step"] == 5 * 2 * 10 * 1024 * 5 * 2
    assert row["instance_steps_per_s"] == pytest.approx(10 * row["steps_per_s"])
    # Memory per instance: the state (W, b, two Adam moments, history) and the step's arrays.
    assert row["state_bytes_per_instance"] > 3 * 4 * (5 * 2 + 5)
    assert row["step_bytes_per_instance"] > 4 * 1024 * 5
    table = (tmp_path / "benchmark.md").read_text()
    assert "intro_5x2_i10" in table and "ratio" in table
    assert json.loads((tmp_path / "benchmark.json").read_text())["rows"][0]["workload"]


def test_benchmark_rejects_bad_steps(capsys):
    assert benchmark.main(["--steps", "0"]) == 2
    assert benchmark.main(["--repeats", "0"]) == 2


def test_repeats_report_the_median_round_and_keep_every_round(monkeypatch):
    rates = iter([100.0, 300.0, 200.0])

    def fake_round(names, **kw):
        r = next(rates)
        return [{"workload": names[0], "steps_per_s": r, "instance_steps_per_s": 10 * r,
                 "compile_s": 1.0, "ratio_vs_reference": r / 50,
                 "reference_instance_steps_per_s": 500, "rng_floor_steps_s": 1.0,
                 "flop_floor_steps_s": 1.0, "bytes_floor_steps_s": 1.0}]

    monkeypatch.setattr(benchmark, "_benchmark_round", fake_round)
    (row,) = benchmark.run_benchmark(["intro_5x2_i10"], steps=1, data_sharing="instance",
                                     rng_impl=None, min_seconds=0.0, repeats=3)
    assert row["steps_per_s"] == 200.0 and row["steps_per_s_runs"] == [100.0, 300.0, 200.0]
    assert row["instance_steps_per_s"] == 2000.0 and row["repeats"] == 3


def test_benchmark_rejects_an_unknown_kind(capsys):
    assert benchmark.main(["--kind", "quinary"]) == 2
    assert "--kind 'quinary' is not a kind" in capsys.readouterr().err


def test_the_fp_first_workload_switches_after_its_warm_up_chunk():
    w = benchmark.WORKLOADS["intro_5x2_i10"]
    cfg = benchmark.workload_config(w, chunk=20, kinds=("ternary",), fp_first=True)
    assert cfg.kind == ("ternary",) and cfg.fp_steps == 20  # the end of the warm-up chunk
    assert benchmark.workload_config(w, chunk=20, kinds=("ternary",)).fp_steps == 0


@pytest.mark.integration  # an end-to-end run: the second tier
def test_scaling_writes_table_figure_and_manifest(tmp_path):
    rows = benchmark.run_scaling(tmp_path, counts=(10, 30), steps=5, min_seconds=0.05)
    assert [r["n_instances"] for r in rows] == [10, 30]
    assert all(r["compile_s"] > 0 and r["instance_steps_per_s"] > 0 for r in rows)
    for name in ("scaling.csv", "scaling.png", "scaling.pdf", "scaling.json"):
        assert (tmp_path / name).exists(), name
    manifest = json.loads((tmp_path / "scaling.json").read_text())
    assert "commit" in manifest["git"] and manifest["settings"]["counts"] == [10, 30]
    assert [r["n_instances"] for r in manifest["rows"]] == [10, 30]


@pytest.mark.parametrize("module", ["benchmark", "findings", "explore", "representable"])
def test_every_tool_sets_the_runtime_up_first(module, monkeypatch):
    import importlib

    from experiments import _runtime

    tool = importlib.import_module(f"experiments.{module}")
    monkeypatch.setattr(_runtime, "start_tool", lambda **_: 7)  # "set up, then stop"
    assert tool.main(["--help"]) == 7  # before its own arguments are even parsed


@pytest.mark.integration
def test_the_benchmark_uses_the_cpu_devices_the_experiments_use(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "BITJAX_CPU_DEVICES": "3"}
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--workload",
                        "intro_5x2_i10", "--steps", "5", "--min-seconds", "0.05", "--out",
                        str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "3 cpu device(s)" in r.stderr
    assert (tmp_path / "benchmark.md").read_text().startswith("Devices: 3 x cpu")


def test_a_two_phase_workload_warms_up_through_its_switch():
    from experiments import benchmark

    w = benchmark.WORKLOADS["intro_5x2_i10"]
    plain = benchmark.workload_config(w, chunk=10, kinds=("ternary",))
    fp = benchmark.workload_config(w, chunk=10, kinds=("ternary",), fp_first=True)
    assert benchmark.warmup_chunks(plain) == 1
    # The switch happens at the start of the chunk after fp_steps: the second, also warm-up.
    assert fp.fp_steps == fp.chunk_size and benchmark.warmup_chunks(fp) == 2

