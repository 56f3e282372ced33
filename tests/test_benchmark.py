"""The benchmark runs, reports every field it promises, and computes sane floors."""

from __future__ import annotations

import json

from experiments import benchmark


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
    lo, hi = row["steps_per_s_range"]
    assert row["chunks_timed"] >= 3 and lo <= row["steps_per_s"] <= hi
    # Memory per instance: the state (W, b, two Adam moments, history) and the step's arrays.
    assert row["state_bytes_per_instance"] > 3 * 4 * (5 * 2 + 5)
    assert row["step_bytes_per_instance"] > 4 * 1024 * 5
    table = (tmp_path / "benchmark.md").read_text()
    assert "intro_5x2_i10" in table and "ratio" in table
    assert json.loads((tmp_path / "benchmark.json").read_text())["rows"][0]["workload"]


def test_benchmark_rejects_bad_steps(capsys):
    assert benchmark.main(["--steps", "0"]) == 2


def test_scaling_writes_table_figure_and_manifest(tmp_path):
    rows = benchmark.run_scaling(tmp_path, counts=(10, 30), steps=5, min_seconds=0.05)
    assert [r["n_instances"] for r in rows] == [10, 30]
    assert all(r["compile_s"] > 0 and r["instance_steps_per_s"] > 0 for r in rows)
    for name in ("scaling.csv", "scaling.png", "scaling.pdf", "scaling.json"):
        assert (tmp_path / name).exists(), name
    manifest = json.loads((tmp_path / "scaling.json").read_text())
    assert "commit" in manifest["git"] and manifest["settings"]["counts"] == [10, 30]
    assert [r["n_instances"] for r in manifest["rows"]] == [10, 30]
