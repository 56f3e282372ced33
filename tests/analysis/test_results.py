"""bitjax.analysis.results: a trained sweep as a labelled grid, its tables, selections and
footers, and the measures that survive quantization (the scale-free count, the m = 2
geometry and the D_i cluster labels) in the tables and the grid."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bitjax.analysis import grid as analysis
from bitjax.analysis import metrics, results, stats
from bitjax.report import tables
from bitjax.store import files as store_files
from bitjax.store.checkpoint import CheckpointError

# The trained runs here (100 steps, history every 50) are too few steps for the convergence
# rule to judge; that warning is not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")

#: kinds x seeds x probabilities x importances x lr = 2 x 2 x 2 x 2 x 2 = 32 instances (one
#: compile). Importance is vector-valued (the last feature weighted 1 or 0.25); lr varies on
#: purpose, so analyses that want one instance per (kind, seed, probability) must refuse.
GRID = dict(kind=("dense", "ternary"), seed=(0, 1), feature_probability=(1.0, 0.2),
            importance=((1.0, 1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0, 0.25)),
            lr=(1e-3, 3e-3), steps=100, chunk_size=100, history_every=50)


def _save_run(run_dir, cfg):
    """Train ``cfg`` into a finished run folder with the library's resumable run."""
    from bitjax.train.run import run_sweep

    run_sweep(cfg, run_dir, handle_signals=False)
    return run_dir


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, tiny_config):
    root = tmp_path_factory.mktemp("results")
    grid = _save_run(root / "grid", tiny_config(**GRID))
    return root, grid


@pytest.fixture(scope="module")
def sweep(run_dirs):
    return results.load_sweep(run_dirs[1])


@pytest.fixture(scope="module")
def ds(sweep):
    return sweep.to_xarray()


def test_grid_dimensions_and_values(sweep, ds):
    cfg = sweep.config
    assert sweep.n_instances == 32 and sweep.finished and sweep.step == cfg.steps
    assert dict(ds.sizes) == {"kind": 2, "seed": 2, "feature_probability": 2,
                              "importance": 2, "lr": 2, "weight_decay": 1, "feature": 5,
                              "hidden": 2, "step": 2}
    assert list(ds.kind.values) == ["dense", "ternary"]
    np.testing.assert_array_equal(ds.feature_probability.values, [1.0, 0.2])
    np.testing.assert_array_equal(ds.lr.values, [1e-3, 3e-3])
    np.testing.assert_array_equal(ds.step.values, [50, 100])
    m = sweep.metrics()
    for i in range(sweep.n_instances):
        c = {k: sweep.coords[k][i].item() for k in ("kind", "seed", "feature_probability",
                                                    "lr", "weight_decay")}
        cell = ds.sel({**c, "importance": ds.importance.values[
            sweep.coords["importance_index"][i]]})
        assert int(cell.instance) == i
        assert float(cell.loss) == sweep.loss[i]
        assert float(cell.dims_per_feature) == m["dims_per_feature"][i]
        np.testing.assert_array_equal(cell.W_eff.transpose("hidden", "feature").values,
                                      sweep.W_eff[i])
        np.testing.assert_array_equal(cell.bias.values, sweep.b[i])
        np.testing.assert_array_equal(cell.history.values, sweep.history[i])
    for name in results.SCALAR_METRICS + ("loss", "diverged"):
        assert name in ds.data_vars
    assert ds.norm.dims[-1] == "feature"
    assert not bool(ds.diverged.any())


def test_paired_difference_is_the_per_instance_difference(sweep, ds):
    diff = ds.loss.sel(kind="ternary") - ds.loss.sel(kind="dense")
    assert "kind" not in diff.dims and diff.size == 16
    for cell in np.ndindex(2, 2, 2, 2):
        where = dict(zip(("seed", "feature_probability", "importance", "lr"),
                         ((0, 1)[cell[0]], (1.0, 0.2)[cell[1]], f"vector {cell[2]}",
                          (1e-3, 3e-3)[cell[3]]),
                         strict=True))
        t = sweep.select(kind="ternary", **where)
        d = sweep.select(kind="dense", **where)
        assert t.size == d.size == 1
        got = float(diff.sel(where).squeeze())
        assert got == sweep.loss[t[0]] - sweep.loss[d[0]]
    np.testing.assert_array_equal(
        stats.paired_difference(ds.loss).values, diff.values)
    va, vb, d = analysis.paired(sweep, sweep.loss, feature_probability=0.2)
    assert d.size == 8
    np.testing.assert_array_equal(
        np.sort(d), np.sort(diff.sel(feature_probability=0.2).values.ravel()))


def test_select_names_the_values_that_exist(sweep):
    with pytest.raises(ValueError, match="no kind 'ternery'; this sweep has dense, ternary"):
        sweep.select(kind="ternery")
    with pytest.raises(ValueError, match=r"no feature_probability 0\.25; this sweep has 1, "
                                         r"0\.2"):
        sweep.select(feature_probability=0.25)
    with pytest.raises(ValueError, match="no seed 7"):
        sweep.select(seed=7)
    with pytest.raises(ValueError, match="no coordinate 'sparsity'"):
        sweep.select(sparsity=0.1)
    # a float within the relative tolerance is the grid value; a list matches any entry
    assert sweep.select(feature_probability=0.2 * (1 + 1e-12)).size == 16
    assert sweep.select(kind=["dense", "ternary"], seed=0).size == 16
    with pytest.raises(ValueError, match="no kind 'binary'"):
        stats.paired_difference(sweep.to_xarray().loss, "binary")


def test_an_axis_that_varies_is_never_averaged_silently(sweep):
    with pytest.raises(ValueError, match=r"varies importance \(2 values: vector 0, vector 1\)"):
        analysis.kind_seed_grid(sweep, sweep.loss)
    with pytest.raises(ValueError, match=r"varies lr \(2 values: 0\.001, 0\.003\)"):
        results.one_cell_per(sweep.to_xarray().loss.sel(importance="vector 0"),
                             analysis.KIND_SEED_PROBABILITY)
    with pytest.raises(ValueError, match="varies importance"):
        analysis.best_seed_grid(sweep)
    # choosing the other axes explicitly leaves one instance per cell
    da = results.one_cell_per(sweep.to_xarray().loss.sel(lr=1e-3, importance="vector 1"),
                              analysis.KIND_SEED_PROBABILITY)
    assert da.dims == ("kind", "seed", "feature_probability")


def test_vector_valued_axis_gets_labels(sweep, ds):
    assert sweep.vector_axes() == ("importance",)
    np.testing.assert_array_equal(ds.importance.values, ["vector 0", "vector 1"])
    np.testing.assert_allclose(ds.importance_vector.sel(importance="vector 1").values,
                               [1, 1, 1, 1, 0.25])
    assert ds.importance_vector.dims == ("importance", "feature")
    i = sweep.select(kind="ternary", importance="vector 1")
    assert i.tolist() == sweep.select(kind="ternary", importance_index=1).tolist()
    assert i.size == 8
    np.testing.assert_array_equal(
        np.sort(ds.instance.sel(kind="ternary", importance="vector 1").values.ravel()), i)
    with pytest.raises(ValueError, match="settings are 'vector 0', 'vector 1'"):
        sweep.select(importance=1)  # a number is a value, never a position
    with pytest.raises(ValueError, match="no importance_index 2"):
        sweep.select(importance_index=2)


def _unfitted_sweep(cfg) -> results.LoadedSweep:
    """A LoadedSweep of ``cfg`` with random weights (labels and lookups need no training)."""
    from bitjax.config import build_instances

    inst = build_instances(cfg)
    rng = np.random.default_rng(0)
    W = rng.normal(size=(inst.n, cfg.n_hidden, cfg.n_features)).astype(np.float32)
    b = np.zeros((inst.n, cfg.n_features), np.float32)
    return results.LoadedSweep(
        path=None, config=cfg, coords=inst.coords, step=cfg.steps, W=W, b=b, W_eff=W,
        history=np.ones((inst.n, cfg.n_history), np.float32),
        meta={"final_loss": [0.1] * inst.n, "config": cfg.to_dict()}, name="mixed")


def test_a_mixed_scalar_and_vector_axis_is_labelled_unambiguously(tiny_config):
    vec = (1.0, 1.0, 1.0, 1.0, 0.25)
    sweep = _unfitted_sweep(tiny_config(kind=("dense",), seed=(0,), importance=(1.0, vec),
                                        steps=100, chunk_size=100, history_every=50))
    ds = sweep.to_xarray()
    np.testing.assert_array_equal(ds.importance.values, ["1^i", "vector 1"])
    # the scalar setting 1.0 is found by its value, right, and never by position
    i = sweep.select(importance=1.0)
    assert i.tolist() == sweep.select(importance_index=0).tolist() == \
        sweep.select(importance="1^i").tolist()
    np.testing.assert_allclose(ds.importance_vector.sel(importance="1^i").values, 1.0)
    with pytest.raises(KeyError):  # a number on the labelled coordinate is an error
        ds.sel(importance=1.0)
    df = sweep.to_dataframe()
    assert list(df["importance"]) == ["1^i", "vector 1"]
    assert list(df["importance_index"]) == [0, 1]
    with pytest.raises(ValueError, match="no importance 0.5"):
        sweep.select(importance=0.5)


def test_threshold_is_an_analysis_argument(sweep, ds):
    norms = sweep.metrics()["norm"]
    np.testing.assert_array_equal(ds.n_represented.values.ravel(),  # grid C order = instances
                                  (norms > 0.5).sum(1))
    assert ds.attrs["threshold"] == 0.5
    # an older run stored the threshold in its training config: it is the default
    meta = {**sweep.meta, "config": {**sweep.meta["config"], "threshold": 0.7}}
    old = dataclasses.replace(sweep, meta=meta)  # a new sweep computes its own metrics
    assert old.default_threshold == 0.7
    np.testing.assert_array_equal(old.metrics()["n_represented"], (norms > 0.7).sum(1))
    np.testing.assert_array_equal(old.to_xarray(threshold=0.5).n_represented, ds.n_represented)


def test_dataframe_has_one_row_per_instance(sweep):
    df = sweep.to_dataframe()
    assert len(df) == sweep.n_instances
    for col in ("instance", "kind", "seed", "feature_probability", "lr", "loss", "diverged",
                *results.SCALAR_METRICS):
        assert col in df.columns
    np.testing.assert_array_equal(df["loss"].values, sweep.loss)
    np.testing.assert_array_equal(df["kind"].values, sweep.coords["kind"])
    assert df.groupby("kind").size().to_dict() == {"dense": 16, "ternary": 16}


def test_csv_round_trip(sweep, tmp_path):
    files = tables.write_tables(sweep, tmp_path)
    assert [f.name for f in files] == ["metrics.csv", "features.csv.gz"]
    rows = store_files.read_csv(files[0])
    assert list(rows[0])[:10] == ["instance", "kind", "seed", "feature_probability",
                                  "importance_index", "lr", "weight_decay", "loss",
                                  "diverged", "dims_per_feature"]
    df = sweep.to_dataframe()
    assert len(rows) == len(df)
    for col in ("loss", "dims_per_feature", "n_represented", "lr"):
        np.testing.assert_allclose([float(r[col]) for r in rows], df[col].values, rtol=1e-6)
    assert [r["kind"] for r in rows] == list(df["kind"])
    feats = store_files.read_csv(files[1])
    assert len(feats) == sweep.n_instances * sweep.config.n_features
    np.testing.assert_allclose([float(r["bias"]) for r in feats], sweep.b.ravel(), rtol=1e-6)


def test_multi_part_folder_loads_every_part(run_dirs, tmp_path):
    root, grid = run_dirs
    # Parts found from the experiment file (new name) ...
    exp = tmp_path / "exp"
    exp.mkdir()
    for name in ("relu", "linear"):
        (exp / name).symlink_to(grid, target_is_directory=True)
    desc = {"experiment": "sparsity", "preset": "tiny", "parts": {"relu": {}, "linear": {}}}
    (exp / "experiment.json").write_text(json.dumps(desc))
    (exp / "manifest.json").write_text(json.dumps({"git": {"commit": "abc1234def",
                                                           "dirty": False}}))
    got = results.load_sweep(exp)
    assert isinstance(got, results.SweepCollection)
    assert list(got) == ["relu", "linear"] and len(got) == 2
    assert got["relu"].n_instances == got["linear"].n_instances == 32
    assert got["relu"].name == "relu" and got["linear"].name == "linear"
    assert got.provenance.preset == "tiny"
    with pytest.raises(KeyError, match="no part 'zoom'; this experiment has relu, linear"):
        got["zoom"]
    # ... and with no description at all (subfolders)
    (exp / "experiment.json").unlink()
    assert sorted(results.load_sweep(exp)) == ["linear", "relu"]
    # a described part that is missing is named
    (exp / "experiment.json").write_text(json.dumps({**desc, "parts": {"relu": {},
                                                                       "zoom": {}}}))
    with pytest.raises(CheckpointError, match="part 'zoom'.*parts: relu, zoom"):
        results.load_sweep(exp)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a bitjax run"):
        results.load_sweep(tmp_path / "empty")


def test_footer_names_preset_steps_seeds_and_commit(run_dirs, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from bitjax.report import plots

    root, grid = run_dirs
    exp = tmp_path / "uniform"
    exp.mkdir()
    (exp / "only").symlink_to(grid, target_is_directory=True)
    (exp / "experiment.json").write_text(json.dumps(
        {"experiment": "uniform", "preset": "tiny", "parts": {"only": {}}}))
    (exp / "manifest.json").write_text(json.dumps({"git": {"commit": "0123456789abcdef",
                                                           "dirty": True}}))
    parts = results.load_experiment(exp)
    label = tables.run_label(parts)
    n_bad = int(parts["only"].diverged.sum())
    tail = (f"{n_bad} of {parts['only'].n_instances} instances diverged (left out)" if n_bad
            else "none diverged")
    assert label == (f"uniform: preset tiny, 100 steps, 2 seeds, recipe constant lr "
                     f"0.001/0.003, weight decay 0.01, commit 0123456 (dirty), {tail}")
    # a fresh run knows its preset before any file says it
    fresh = tables.run_label(results.load_sweep(grid),
                              results.Provenance("uniform", "quick", "feedbeef"))
    assert fresh == (f"uniform: preset quick, 100 steps, 2 seeds, recipe constant lr "
                     f"0.001/0.003, weight decay 0.01, commit feedbee, {tail}")

    fig, axes = plots.new_figure(1, 1)
    axes[0, 0].plot([0, 1], [0, 1])
    axes[0, 0].set_xlabel("x label")
    plots.footer(fig, label)
    assert label in [t.get_text() for t in fig.texts]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    text = next(t for t in fig.texts if t.get_text() == label)
    below = text.get_window_extent(renderer).y1
    assert below <= axes[0, 0].xaxis.label.get_window_extent(renderer).y0  # under the label
    files = plots.save(fig, tmp_path / "fig")
    assert all(f.stat().st_size > 0 for f in files)


def test_uniform_plot_shows_a_curve_above_the_default_limit():
    import matplotlib

    matplotlib.use("Agg")
    from bitjax.report import plots

    fig, axes = plots.new_figure(1, 1)
    ax = axes[0, 0]
    ax.plot([1, 2], [0.5, 1.6])
    plots.data_ylim(ax, np.array([0.5, 1.6, np.nan]), floor=0.0, ceiling=1.15)
    lo, hi = ax.get_ylim()
    assert lo == 0.0 and hi > 1.6
    plots.data_ylim(ax, np.array([0.2, 0.9]), floor=0.0, ceiling=1.15)
    assert ax.get_ylim() == (0.0, 1.15)
    plots.close(fig)


def test_statistics_use_student_t():
    assert stats.t_quantile(2) == pytest.approx(4.302653, abs=1e-6)
    assert stats.t_quantile(1000) == pytest.approx(1.962339, abs=1e-6)
    x = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 4.0]])
    mean, half = stats.mean_ci(x, axis=0)
    np.testing.assert_allclose(mean, [3.0, 3.0])
    np.testing.assert_allclose(half, [stats.t_quantile(2) * 2 / np.sqrt(3),
                                      stats.t_quantile(1) * np.sqrt(2) / np.sqrt(2)])
    m, h = stats.mean_ci_floats([7.0])
    assert m == 7.0 and np.isnan(h)
    m, h = stats.mean_ci_floats([np.nan])
    assert np.isnan(m) and np.isnan(h)


def test_a_sweep_prints_short(sweep):
    text = repr(sweep)
    assert len(text.splitlines()) == 3 and len(text) < 600
    assert "n=5, m=2, 32 instances at step 100 (finished)" in text
    assert "kind 2 (dense, ternary)" in text and "importance 2" in text
    assert "dense" in text.splitlines()[2] and "diverged" in text.splitlines()[2]
    assert sweep._repr_html_().startswith("<pre>")


def test_a_collection_has_one_table_and_one_dataset_over_its_parts(sweep, tiny_config):
    other = _unfitted_sweep(tiny_config(n_features=6, kind=("dense",), seed=(0,),
                                        steps=100, chunk_size=100, history_every=50))
    both = results.SweepCollection({"grid": sweep, "other": other})
    df = both.to_dataframe()
    assert list(df.columns[:2]) == ["part", "instance"]
    assert (df["part"] == "grid").sum() == 32 and (df["part"] == "other").sum() == 1
    ds = both.to_xarray()
    assert list(ds.part.values) == ["grid", "other"] and ds.sizes["feature"] == 6
    np.testing.assert_array_equal(
        ds.loss.sel(part="grid").dropna("importance", how="all").values.size, 32 * 1)
    assert float(ds.loss.sel(part="other", kind="dense").max()) == 0.1
    assert "grid" in repr(both) and "other" in repr(both)


@pytest.fixture(scope="module")
def columns_sweep(tmp_path_factory, tiny_config):
    from bitjax.train.run import run_sweep

    run_dir = tmp_path_factory.mktemp("columns") / "run"
    cfg = tiny_config(kind=("dense", "ternary"), seed=(0, 1), feature_probability=(1.0, 0.05),
                      steps=100, chunk_size=100, history_every=50)
    run_sweep(cfg, run_dir, handle_signals=False)
    return results.load_sweep(run_dir)


def test_code_names():
    assert list(results.code_names("geometry_m2", [-1, 0, 7])) == ["", "other", "pentagon"]
    assert list(results.code_names("dimensionality_label", [4, 7])) == ["1/2", "1"]


def test_tables_carry_the_measures(columns_sweep, tmp_path):
    tables.write_tables(columns_sweep, tmp_path)
    rows = store_files.read_csv(tmp_path / "metrics.csv")
    m = columns_sweep.metrics()
    assert len(rows) == columns_sweep.n_instances
    for i, r in enumerate(rows):
        assert int(r["n_represented_relative"]) == int(m["n_represented_relative"][i])
        code = int(r["geometry_m2"])
        assert code >= 0  # every instance here has m = 2
        assert r["geometry_m2_name"] == metrics.GEOMETRY_M2_LABELS[code]
    feats = store_files.read_csv(tmp_path / "features.csv.gz")
    assert len(feats) == columns_sweep.n_instances * columns_sweep.config.n_features
    rel = np.array([float(f["relative_norm"]) for f in feats])
    rel = rel.reshape(columns_sweep.n_instances, -1)
    # Relative to the instance's largest feature norm: the largest is 1 (unless all are 0).
    norms = m["norm"]
    live = norms.max(axis=1) > 0
    np.testing.assert_allclose(rel.max(axis=1)[live], 1.0, rtol=1e-6)
    assert {f["dimensionality_label"] for f in feats} <= set(metrics.DIMENSIONALITY_LABELS)


def test_grid_carries_the_measures(columns_sweep):
    ds = columns_sweep.to_xarray()
    for name in ("n_represented_relative", "geometry_m2", "geometry_m2_name"):
        assert ds[name].dims == ("kind", "seed", "feature_probability", "importance", "lr",
                                 "weight_decay")
    for name in ("relative_norm", "dimensionality_label", "dimensionality_label_name"):
        assert ds[name].dims[-1] == "feature"
    assert ds["geometry_m2"].attrs["labels"] == list(metrics.GEOMETRY_M2_LABELS)
    codes = ds["geometry_m2"].values.ravel()
    names = ds["geometry_m2_name"].values.ravel()
    assert [metrics.GEOMETRY_M2_LABELS[c] for c in codes] == list(names)
    df = columns_sweep.to_dataframe()
    assert "geometry_m2_name" in df.columns and "n_represented_relative" in df.columns
