"""The interactive explorer (bitjax.report.explorer, python -m experiments.explore).

Two tiny sweeps are trained once per module into a two-part experiment folder: parts ``a``
and ``b`` (n=5, m=2, dense + ternary, two probabilities, two seeds) differ in their learning
rate only, so the second compiles from the persistent cache. The default tier checks what
the page is built from (the packed data decodes to the sweep's own numbers within the
documented rounding, the lookup grid, the summary, the history thinning, the shared
plotly.js, a hand-made diverged instance kept off the start and the shared axes, the run's
convergence rule in the notes) and the command line; the integration tier opens the pages
in headless chromium (the browser log must stay free of errors and warnings), reads the
plotted instances back from the page, switches the part, moves a slider, unticks a kind,
and opens a page that shares plotly.js from disk.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitjax.analysis import metrics as metrics_lib
from bitjax.report.explorer import (
    SHARED_SIZE_LIMIT_BYTES,
    SIZE_LIMIT_BYTES,
    ExplorerError,
    browser_missing,
    dequantize,
    headless_chromium,
    history_columns,
    open_page,
    plotlyjs_name,
    read_payload,
    write_explorer,
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_config):
    """An experiment folder with parts ``b`` then ``a`` (that order in experiment.json)."""
    from bitjax.train.run import run_sweep

    root = tmp_path_factory.mktemp("explorer-experiment")
    configs = {
        "b": tiny_config(kind=("dense", "ternary"), feature_probability=(1.0, 0.1),
                         seed=(0, 1), history_every=10, lr=(3e-3,)),
        "a": tiny_config(kind=("dense", "ternary"), feature_probability=(1.0, 0.1),
                         seed=(0, 1), history_every=10),
    }
    for name, cfg in configs.items():
        # one compiled chunk length per run (no short timed first chunk): compiling is
        # most of this fixture's time
        result = run_sweep(cfg, root / name, handle_signals=False, max_chunk_seconds=None)
        assert result.finished
    (root / "experiment.json").write_text(json.dumps({"parts": {k: {} for k in configs}}))
    return root


@pytest.fixture(scope="module")
def sweep_a(experiment):
    from bitjax import load_sweep

    return load_sweep(experiment / "a")


@pytest.fixture(scope="module")
def sweep_b(experiment):
    from bitjax import load_sweep

    return load_sweep(experiment / "b")


@pytest.fixture(scope="module")
def page(experiment, tmp_path_factory):
    return write_explorer(experiment, tmp_path_factory.mktemp("page") / "explorer.html")


#: The instance made to diverge in ``diverged_sweep``: dense, seed 0, 1-S = 1 (the page's
#: first grid point, where it would otherwise open).
DIVERGED = 0


@pytest.fixture(scope="module")
def diverged_sweep(sweep_a):
    """Part ``a`` with instance DIVERGED made a runaway by hand: weights 40 times larger,
    a final loss and a history 1,000 times the zero model's, and the stored flags saying
    so; and with its convergence rule's slope tolerance changed to 0.037 (the page must
    say the run's rule, not the default)."""
    import dataclasses

    i = DIVERGED
    assert str(sweep_a.coords["kind"][i]) == "dense" and int(sweep_a.coords["seed"][i]) == 0
    assert float(sweep_a.coords["feature_probability"][i]) == 1.0
    w, w_eff, hist = (np.array(a, copy=True) for a in (sweep_a.W, sweep_a.W_eff,
                                                       sweep_a.history))
    w[i] *= 40
    w_eff[i] *= 40
    hist[i] = 1e3 * sweep_a.zero_loss[i]
    meta = json.loads(json.dumps(sweep_a.meta))
    meta["final_loss"][i] = 1e3 * float(sweep_a.zero_loss[i])
    meta["diagnostics"]["diverged"][i] = True
    meta["diagnostics"]["converged"][i] = False
    meta["convergence_rule"]["slope_tol"] = 0.037
    out = dataclasses.replace(sweep_a, W=w, W_eff=w_eff, history=hist, meta=meta,
                              name="diverged")
    assert out.diverged.tolist() == [True] + [False] * 7
    return out


@pytest.fixture(scope="module")
def shared_page(diverged_sweep, tmp_path_factory):
    """The diverged sweep's page in results/run/, sharing results/plotly-<version>.min.js."""
    results = tmp_path_factory.mktemp("results")
    return write_explorer(diverged_sweep, results / "run" / "explorer.html", plotlyjs=results)


def _instance(part: dict, kind: str, **positions) -> int:
    """The instance the page's lookup grid gives for a kind and axis positions (default 0)."""
    shape = [len(part["kinds"])] + [len(a["labels"]) for a in part["axes"]]
    index = [part["kinds"].index(kind)] + [positions.get(a["name"], 0) for a in part["axes"]]
    return int(np.asarray(part["grid"]).reshape(shape)[tuple(index)])


def test_payload_decodes_to_the_sweep(page, sweep_a):
    payload = read_payload(page)
    assert [p["name"] for p in payload["parts"]] == ["b", "a"]  # experiment.json's order
    part = payload["parts"][1]
    assert (part["n"], part["m"], part["n_instances"]) == (5, 2, 8)
    assert part["kinds"] == ["dense", "ternary"]
    names = [a["name"] for a in part["axes"]]
    assert names == ["seed", "feature_probability", "importance", "lr", "weight_decay"]
    fp = part["axes"][1]
    assert fp["values"] == [1.0, 0.1]  # sparsity grows left to right

    w = np.asarray(sweep_a.W_eff, np.float64)
    got = dequantize(part["fields"]["W"]).transpose(0, 2, 1)  # stored as W^T, [I, n, m]
    # int8 with one scale per instance: error at most half a step of that instance's range
    step = np.abs(w).max(axis=(1, 2), keepdims=True) / 127
    assert np.all(np.abs(got - w) <= 0.5 * step + 1e-6)
    # ternary weights are gamma * {-1, 0, 1}: exact up to float32
    tern = sweep_a.coords["kind"] == "ternary"
    np.testing.assert_allclose(got[tern], w[tern], rtol=1e-6, atol=1e-7)

    norms = np.asarray(metrics_lib.feature_norms(np.asarray(w[0], np.float32)))
    np.testing.assert_allclose(dequantize(part["fields"]["norm"])[0], norms, rtol=0.01,
                               atol=0.01 * norms.max())
    np.testing.assert_allclose(dequantize(part["fields"]["loss"]), sweep_a.loss, rtol=1e-3)
    hist = np.asarray(sweep_a.history, np.float64)
    # the whole history (nothing forces thinning), at the steps it was recorded
    np.testing.assert_allclose(dequantize(part["fields"]["history"]), hist, rtol=0.05)
    assert part["history_steps"].tolist() == list(range(10, 201, 10))
    assert part["diverged"].tolist() == [0] * 8
    assert part["start"] == [0, 0, 0, 0, 0]  # nothing diverged: the first grid point
    assert sorted(part["values"]) == ["code_changed_fraction", "flip_rate", "rel_slope",
                                      "tail_mean_loss"] and part["values_left_out"] == []
    # each flag once: converged (stored with the run); diverged is the page's own count
    assert [f["name"] for f in part["flags"]] == ["converged"]

    # the grid finds every instance at its own coordinates
    coords = sweep_a.coords
    for i in range(8):
        pos = {"seed": int(coords["seed"][i]),
               "feature_probability": fp["values"].index(float(coords["feature_probability"][i]))}
        assert _instance(part, str(coords["kind"][i]), **pos) == i

    # summary: D* mean over the two seeds of (dense, 1-S = 0.1), 1/(1-S) = 10 on the x axis
    assert part["summary"]["x"] == [1.0, 10.0]
    dstar = sweep_a.metrics()["dims_per_feature"]
    cell = sweep_a.select(kind="dense", feature_probability=0.1)
    table = np.asarray(part["summary"]["table"])  # [combos, kinds, 6, probabilities]
    np.testing.assert_allclose(table[0, 0, 0, 1], dstar[cell].mean(), rtol=1e-3)
    np.testing.assert_allclose(table[0, 0, 5, 1], sweep_a.loss[cell].max(), rtol=1e-3)
    assert page.stat().st_size < SIZE_LIMIT_BYTES


def test_sources_and_bad_input(sweep_a, experiment, tmp_path):
    # a loaded sweep, a single run folder and a mapping of parts all work
    one = read_payload(write_explorer(sweep_a, tmp_path / "one.html", title="T <1>"))
    assert [p["name"] for p in one["parts"]] == ["a"] and one["title"] == "T <1>"
    assert "<title>T &lt;1&gt;</title>" in (tmp_path / "one.html").read_text()
    two = read_payload(write_explorer({"x": experiment / "b", "y": sweep_a}, tmp_path / "2.html"))
    assert [(p["name"], p["axes"][3]["labels"]) for p in two["parts"]] == [
        ("x", ["0.003"]), ("y", ["0.001"])]  # the lr axis

    # the same input gives the same bytes (gzip without time stamps, no random ids)
    again = write_explorer(sweep_a, tmp_path / "again.html", title="T <1>")
    assert again.read_bytes() == (tmp_path / "one.html").read_bytes()

    with pytest.raises(ExplorerError, match="does not exist"):
        write_explorer(tmp_path / "missing", tmp_path / "x.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExplorerError, match="is not a bitjax run"):
        write_explorer(tmp_path / "empty", tmp_path / "x.html")


def test_history_columns_keep_the_early_steps():
    # level 0: everything; level 1 of 20: the first 10, then every 2nd, the last kept
    assert history_columns(20, 0).tolist() == list(range(20))
    assert history_columns(20, 1).tolist() == list(range(10)) + [11, 13, 15, 17, 19]
    # the head never drops below 8 points; the stride doubles with the index
    assert history_columns(20, 5).tolist() == list(range(8)) + [9, 11, 13, 15, 19]
    assert history_columns(40, 9).tolist() == list(range(8)) + [9, 11, 13, 15, 19, 23, 27,
                                                                31, 39]
    assert history_columns(6, 3).tolist() == list(range(6))  # too short to thin
    assert history_columns(35, 2).tolist()[-1] == 34  # the final point always


def test_budget_coarsens_weights_then_thins_histories(sweep_a, tmp_path, monkeypatch):
    from bitjax.report import explorer

    monkeypatch.setattr(explorer, "SIZE_LIMIT_BYTES", 0)  # nothing fits: shrink what it can
    part = read_payload(write_explorer(sweep_a, tmp_path / "small.html"))["parts"][0]
    hist = np.asarray(sweep_a.history, np.float64)
    assert hist.shape[1] == 20  # 200 steps, a point every 10
    # the deepest thinning of 20 points: the first 8 whole, then every 2nd, 4th
    cols = list(range(8)) + [9, 11, 13, 15, 19]
    assert part["history_level"] == 2 and part["history_steps"].tolist() == [
        10 * (c + 1) for c in cols]
    np.testing.assert_allclose(dequantize(part["fields"]["history"]), hist[:, cols], rtol=0.05)
    # weights to 15 levels (1/30 of each instance's largest value); ternary still exact
    assert part["levels"] == 15
    w = np.asarray(sweep_a.W_eff, np.float64)
    got = dequantize(part["fields"]["W"]).transpose(0, 2, 1)
    step = np.abs(w).max(axis=(1, 2), keepdims=True) / 15
    assert np.all(np.abs(got - w) <= 0.5 * step + 1e-6)
    assert np.abs(got - w).max() > 0.01 * np.abs(w).max()  # coarser than 1/254, really
    tern = sweep_a.coords["kind"] == "ternary"
    np.testing.assert_allclose(got[tern], w[tern], rtol=1e-6, atol=1e-7)
    assert "to 1/30 of each instance" in read_payload(tmp_path / "small.html")["note"]
    # last, the flag line's diagnostic values (stored with the run) are left out
    assert part["values"] == {} and part["values_left_out"] == [
        "tail_mean_loss", "rel_slope", "flip_rate", "code_changed_fraction"]


def test_diverged_instance_is_kept_off_the_start_and_the_axes(diverged_sweep, shared_page):
    part = read_payload(shared_page)["parts"][0]
    assert part["diverged"].tolist() == [1] + [0] * 7
    # The first grid point (seed 0, 1-S = 1) has the diverged dense instance: the page
    # opens on the first one where both kinds are live, 1-S = 0.1.
    assert part["start"] == [0, 1, 0, 0, 0]
    assert _instance(part, "dense", seed=0, feature_probability=1) != DIVERGED
    # the dense row's norm axis is set by the live dense instances only
    dense = diverged_sweep.coords["kind"] == "dense"
    norms = diverged_sweep.metrics()["norm"]
    live_max = norms[dense & ~diverged_sweep.diverged].max()
    assert norms[DIVERGED].max() > 10 * live_max
    assert part["ranges"]["norm"][0] == pytest.approx(max(1.2, 1.05 * live_max), rel=1e-3)
    # the summary leaves it out: dense at 1-S = 1 is seed 1's alone
    table = np.asarray(part["summary"]["table"])
    seed1 = diverged_sweep.select(kind="dense", feature_probability=1.0, seed=1)
    np.testing.assert_allclose(table[0, 0, 3, 0], diverged_sweep.loss[seed1][0], rtol=1e-3)
    # diverged once (not also as a stored flag); the run's own rule in the notes
    assert [f["name"] for f in part["flags"]] == ["converged"]
    rule = part["flags"][0]["rule"]
    assert "&lt; 0.037 per 1,000 steps" in rule and "slope_tol=0.037" in rule
    assert "Stored with the run" in rule


def test_rule_computed_from_the_history_when_not_stored(sweep_a, tmp_path):
    import dataclasses

    from bitjax.convergence import convergence_summary

    meta = {k: v for k, v in sweep_a.meta.items() if k not in ("diagnostics",
                                                               "convergence_rule")}
    bare = dataclasses.replace(sweep_a, meta=meta)
    part = read_payload(write_explorer(bare, tmp_path / "bare.html"))["parts"][0]
    (flag,) = part["flags"]
    want = convergence_summary(np.asarray(sweep_a.history), 10)["converged"]
    assert flag["name"] == "converged" and flag["value"].tolist() == want.astype(int).tolist()
    assert "bitjax default; the run stored none" in flag["rule"]
    assert "Computed by the explorer" in flag["rule"]


def test_shared_plotlyjs(shared_page, sweep_a, tmp_path, monkeypatch):
    from plotly.offline import get_plotlyjs

    from bitjax.report import explorer

    results = shared_page.parent.parent
    js = results / plotlyjs_name()
    assert js.read_text() == get_plotlyjs() and "plotly-" in js.name
    html = shared_page.read_text()
    assert f'<script src="../{js.name}"' in html and get_plotlyjs()[:2000] not in html
    assert shared_page.stat().st_size < SHARED_SIZE_LIMIT_BYTES < 1_000_000
    assert read_payload(shared_page)["plotly_src"] == f"../{js.name}"

    # written once: a second page of the tree finds the same bytes and writes nothing
    written, real = [], explorer.store_files.write_text
    monkeypatch.setattr(explorer.store_files, "write_text",
                        lambda path, text: written.append(path) or real(path, text))
    second = write_explorer(sweep_a, results / "b" / "c" / "explorer.html", plotlyjs=results)
    assert written == [second] and f'src="../../{js.name}"' in second.read_text()
    # a damaged copy (other bytes under the name) is replaced
    js.write_text("truncated")
    write_explorer(sweep_a, results / "explorer.html", plotlyjs=results)
    assert written[-2:] == [js, results / "explorer.html"]
    assert 'src="' + js.name + '"' in (results / "explorer.html").read_text()

    # the folder must be the page's or one above it
    with pytest.raises(ExplorerError, match="not the folder of .* or one above it"):
        write_explorer(sweep_a, results / "x.html", plotlyjs=tmp_path)
    with pytest.raises(ExplorerError, match='"inline" or a folder'):
        write_explorer(sweep_a, results / "x.html", plotlyjs=3)


def test_command_line(experiment, tmp_path, capsys):
    from experiments.explore import main

    assert main([str(experiment / "b")]) == 0
    assert (experiment / "b" / "explorer.html").is_file()  # the default output
    assert "explorer.html" in capsys.readouterr().out
    # a page that shares plotly.js with its results tree
    page = tmp_path / "results" / "b" / "explorer.html"
    assert main([str(experiment / "b"), "--out", str(page),
                 "--plotlyjs-dir", str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / plotlyjs_name()).is_file()
    assert f"wrote {page} (" in capsys.readouterr().out
    assert main([str(experiment / "b"), "--out", str(page),
                 "--plotlyjs-dir", str(tmp_path / "elsewhere")]) == 2
    assert "one above it" in capsys.readouterr().err
    for bad, why in ((tmp_path / "nope", "does not exist"),
                     (tmp_path, "is not a bitjax run")):
        assert main([str(bad), "--out", str(tmp_path / "x.html")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and why in err


def test_a_page_drawn_into_a_recorded_run_is_recorded(experiment, tmp_path):
    """Redrawing a committed run's page changes a file its manifest has a checksum of: the
    manifest gains the drawing's record (commit, command) and the page's new checksum; a
    page written outside the folder leaves the manifest alone."""
    import hashlib
    import json
    import shutil

    from experiments.explore import main

    run = tmp_path / "run"
    shutil.copytree(experiment / "b", run)
    (run / "manifest.json").write_text(json.dumps(
        {"git": {"commit": "0" * 40}, "files": ["explorer.html"],
         "sha256": {"explorer.html": "stale", "other.csv": "kept"}}))
    assert main([str(run), "--plotlyjs-dir", str(tmp_path)]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    page = (run / "explorer.html").read_bytes()
    assert manifest["sha256"]["explorer.html"] == hashlib.sha256(page).hexdigest()
    assert manifest["sha256"]["other.csv"] == "kept"
    assert manifest["git"] == {"commit": "0" * 40}  # the run's own record is kept
    drawn = manifest["explorer_drawn"]
    assert drawn["files"] == ["explorer.html"]
    assert drawn["command"].endswith(f"{run} --plotlyjs-dir {tmp_path}")
    before = (run / "manifest.json").read_text()
    assert main([str(run), "--out", str(tmp_path / "elsewhere.html")]) == 0
    assert (run / "manifest.json").read_text() == before


# --------------------------------------------------------------------------------------
# In a real browser
# --------------------------------------------------------------------------------------


def _gram(w: np.ndarray) -> np.ndarray:
    return np.asarray(metrics_lib.gram(np.asarray(w, np.float32)), np.float64)


def _console(driver) -> list[str]:
    """The browser log's errors and warnings since the last call (none is the rule)."""
    return [f"{e['level']}: {e['message']}" for e in driver.get_log("browser")
            if e["level"] in ("SEVERE", "WARNING")]


@pytest.mark.integration
def test_page_in_headless_chromium(page, sweep_a, sweep_b, shared_page, diverged_sweep,
                                   tmp_path):
    why = browser_missing()
    if why:
        pytest.skip(f"no headless browser for the explorer test: {why}")
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    payload = read_payload(page)
    part_b, part_a = payload["parts"]
    with headless_chromium() as driver:
        timing = open_page(driver, page)
        print(f"explorer load timing (ms since navigation; CPU s): {timing}")
        # A loose bound that still catches a runaway page script: plotly.js alone costs
        # about 1.5 s of main-thread CPU on the 2-core development machine, this page 2.0-2.3.
        assert timing["cpu_main_s"] < 15 and timing["plotly_ms"] <= timing["ready_ms"]
        assert _console(driver) == []
        # self-contained: nothing was fetched (plotly.js and the data are inline)
        assert driver.execute_script(
            "return performance.getEntriesByType('resource').length") == 0

        def shown(kind):
            return driver.execute_script(
                f"const d = document.getElementById('row-{kind}');"
                "return d && d.data ? [d.data[0].z, d.layout.title.text] : null")

        # The first part is "b": its dense row shows b's first instance.
        z, _ = shown("dense")
        np.testing.assert_allclose(np.asarray(z), _gram(sweep_b.W_eff[_instance(part_b, "dense")]),
                                   atol=0.03)
        # Switch to part "a": the rows show a's instances.
        Select(driver.find_element(By.ID, "part")).select_by_visible_text("a")
        # Switching the part rebuilds the controls: an element found just before the
        # rebuild goes stale, so the wait looks it up again (seen failing on a loaded CPU).
        WebDriverWait(driver, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: "0.001" in d.find_element(By.ID, "value-lr").text)
        for kind in ("dense", "ternary"):
            z, title = shown(kind)
            i = _instance(part_a, kind)
            assert f"instance {i} " in title
            np.testing.assert_allclose(np.asarray(z), _gram(sweep_a.W_eff[i]), atol=0.03)

        # Move the seed slider one step with the keyboard: both rows show seed 1 now.
        before = shown("dense")
        driver.find_element(By.ID, "axis-seed").send_keys(Keys.ARROW_RIGHT)
        WebDriverWait(driver, 10).until(lambda d: shown("dense")[1] != before[1])
        assert driver.find_element(By.ID, "value-seed").text == "1"
        for kind in ("dense", "ternary"):
            z, title = shown(kind)
            i = _instance(part_a, kind, seed=1)
            assert int(sweep_a.coords["seed"][i]) == 1 and f"instance {i} " in title
            np.testing.assert_allclose(np.asarray(z), _gram(sweep_a.W_eff[i]), atol=0.03)
        assert not np.allclose(np.asarray(before[0]), np.asarray(shown("dense")[0]))

        # The summary marks the selected instance: D* of dense at 1/(1-S) = 1.
        marker = driver.execute_script("return document.getElementById('summary').data[3]")
        i = _instance(part_a, "dense", seed=1)
        assert marker["x"] == [1.0]
        np.testing.assert_allclose(marker["y"][0], sweep_a.metrics()["dims_per_feature"][i],
                                   rtol=1e-3)

        # Unticking a kind hides its row.
        driver.find_element(By.ID, "kind-ternary").click()
        assert not driver.find_element(By.ID, "row-ternary").is_displayed()
        assert driver.find_element(By.ID, "row-dense").is_displayed()

        png = tmp_path / "explorer.png"
        assert driver.save_screenshot(str(png))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert _console(driver) == []

        _check_shared_page(driver, shared_page, diverged_sweep, tmp_path)


def _check_shared_page(driver, page, sweep, tmp_path):
    """The diverged sweep's page, plotly.js shared, opened from disk in the same browser."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    part = read_payload(page)["parts"][0]
    open_page(driver, page)
    assert _console(driver) == []
    # plotly.js came from disk, the one shared file next to the results tree (chromium
    # keeps no resource timing for file:// loads: the script element says where from)
    assert driver.execute_script(
        "return [Array.from(document.scripts).filter(s => s.src).map(s => s.src),"
        " typeof Plotly]") == [[(page.parent.parent / plotlyjs_name()).as_uri()], "object"]

    # each flag once in the header: the one diverged instance, and the live ones not
    # converged (of the seven)
    conv = np.asarray(sweep.meta["diagnostics"]["converged"], bool)
    info = driver.find_element(By.ID, "info").text
    assert f"diverged: 1 · not converged (of 7 live): {int((~conv[1:]).sum())}" in info
    assert info.count("diverged") == 1 and info.count("converged") == 1
    # the run's own rule in the notes
    assert "ConvergenceRule(slope_tol=0.037" in driver.find_element(By.ID, "notes").text

    def row(kind):
        return driver.execute_script(
            f"const d = document.getElementById('row-{kind}');"
            "return {title: d.layout.title.text, layout: d.layout, data: d.data};")

    # opens on a live instance: both kinds at seed 0, 1-S = 0.1
    assert driver.find_element(By.ID, "value-feature_probability").text == "0.1"
    dense = row("dense")
    live = _instance(part, "dense", feature_probability=1)
    assert f"instance {live} " in dense["title"] and "DIVERGED" not in dense["title"]

    # every colour has its legend: a colour bar per palette of a row, the bars and the
    # weight diagram's tips on the superposition one, the kinds and the marker in the legend
    bars = {k: dense["layout"][k]["colorbar"]["title"]["text"]
            for k in ("coloraxis", "coloraxis2")}
    assert bars == {"coloraxis": "W<sup>T</sup>W, b", "coloraxis2": "√superposition"}
    assert [t.get("coloraxis") or t.get("marker", {}).get("coloraxis")
            for t in dense["data"]] == ["coloraxis", "coloraxis", "coloraxis2", None,
                                        "coloraxis2"]
    assert driver.execute_script(
        "return Array.from(document.querySelectorAll('#summary .legendtext'))"
        ".map(e => e.textContent)") == ["dense", "ternary", "selected instance"]

    # Move to 1-S = 1: the dense row shows the diverged instance, which stretches nothing.
    driver.find_element(By.ID, "axis-feature_probability").send_keys(Keys.ARROW_LEFT)
    WebDriverWait(driver, 10).until(lambda d: "DIVERGED" in row("dense")["title"])
    dense = row("dense")
    assert f"instance {DIVERGED} " in dense["title"] and "not converged" not in dense["title"]
    assert dense["layout"]["xaxis3"]["range"] == [0, part["ranges"]["norm"][0]]
    summary = driver.execute_script("return document.getElementById('summary').data")
    assert summary[3]["y"] == [None] and summary[7]["y"] == [None]  # dense: not marked
    history = driver.execute_script(
        "const h = document.getElementById('history'); return [h.layout.yaxis.range,"
        " h.data.map(t => t.y)]")
    (lo, hi), (_, ternary) = history
    ternary = np.log10(np.asarray(ternary, np.float64))
    assert lo <= ternary.min() and ternary.max() <= hi < np.log10(sweep.history[DIVERGED]).min()
    assert _console(driver) == []

    # The page copied out of its results tree says what is missing, in words.
    alone = tmp_path / "alone.html"
    alone.write_bytes(page.read_bytes())
    with pytest.raises(RuntimeError, match="plotly.js was not found at ../plotly-"):
        open_page(driver, alone)
    assert "plotly.js was not found" in driver.find_element(By.ID, "error").text


@pytest.mark.integration
def test_screenshot_of_any_page(shared_page, tmp_path, capsys):
    """--screenshot of a page written elsewhere, given as the page itself."""
    why = browser_missing()
    if why:
        pytest.skip(f"no headless browser for the screenshot test: {why}")
    from experiments.explore import main

    assert main([str(shared_page), "--screenshot"]) == 0
    png = shared_page.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"wrote {png}: page ready" in capsys.readouterr().out
    # a page given with anything but --screenshot is a usage error (nothing is written)
    with pytest.raises(SystemExit) as exit_:
        main([str(shared_page), "--screenshot", "--out", str(tmp_path / "x.html")])
    assert exit_.value.code == 2 and "is a page, not a run folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# The neuron view of the privileged-basis models.

#: A tied part's payload keys, written out: the neuron view adds nothing to a tied page.
TIED_PART_KEYS = ["name", "n", "m", "n_instances", "activation", "steps", "step",
                  "history_every", "history_points", "history_steps", "history_level",
                  "levels", "finished", "start", "kinds", "axes", "grid", "grid_delta",
                  "ranges", "summary", "fields", "diverged", "flags", "values",
                  "values_left_out", "templates"]
#: Neurons by hand (n=3 features, m=4 neurons): neuron 0 monosemantic; 1 carries two
#: features (shares .36, .64); 2 is dead (norm .05); 3 carries three equally. The second
#: seed keeps neurons 0 and 2 twice: two monosemantic, two dead.
NEURONS = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 0.05], [0.5, -0.5, 0.5]])


@pytest.fixture(scope="module")
def neuron_sweep():
    """An untrained ReLU-hidden LoadedSweep (dense, two seeds) with :data:`NEURONS`."""
    from pathlib import Path

    from bitjax.analysis.results import LoadedSweep
    from bitjax.config import SweepConfig, build_instances

    w = np.stack([NEURONS, NEURONS[[0, 0, 2, 2]]]).astype(np.float32)
    cfg = SweepConfig(n_features=3, n_hidden=4, model="relu_hidden", kind=("dense",),
                      seed=(0, 1), steps=10, chunk_size=10, history_every=10)
    inst = build_instances(cfg)
    b = np.zeros((2, 3), np.float32)
    return LoadedSweep(path=Path("neurons"), config=cfg, coords=inst.coords, step=10, W=w,
                       b=b, W_eff=w, history=np.full((2, 1), 0.05, np.float32),
                       meta={"final_loss": [0.05, 0.06]}, name="neurons",
                       params={"W": w, "b": b})


@pytest.fixture(scope="module")
def neuron_page(neuron_sweep, tmp_path_factory):
    return write_explorer(neuron_sweep, tmp_path_factory.mktemp("neurons") / "explorer.html")


def test_a_tied_page_has_no_neuron_view(page):
    for part in read_payload(page)["parts"]:
        assert list(part) == TIED_PART_KEYS
        assert sorted(part["templates"]) == ["history", "row", "summary"]


def test_the_neuron_view_of_a_relu_hidden_sweep(neuron_page, neuron_sweep):
    from bitjax.analysis import neurons
    from bitjax.report.explorer import feature_colours

    (part,) = read_payload(neuron_page)["parts"]
    assert list(part) == TIED_PART_KEYS + ["neurons"]
    assert part["neurons"] == {"model": "relu_hidden", "carry_share": neurons.CARRY_SHARE,
                               "dead_norm": neurons.DEAD_NORM}
    view = part["templates"]["neurons"]
    assert view["layout"]["barmode"] == "stack"
    assert [t["name"] for t in view["traces"]] == ["feature 0", "feature 1", "feature 2"]
    assert [t["marker"]["color"] for t in view["traces"]] == feature_colours(3)
    assert all(t["x"] == [0, 1, 2, 3] for t in view["traces"])
    # the page's shares come from the shipped weights (W^T per instance): within the
    # packing they are the neurons module's, and so are the counts from the cuts
    w = dequantize(part["fields"]["W"]).transpose(0, 2, 1)
    np.testing.assert_allclose(neurons.weight_shares(w), neurons.weight_shares(
        neuron_sweep.W_eff), atol=0.02)
    got = neurons.neuron_metrics(w)
    np.testing.assert_array_equal(got["n_monosemantic"], [1, 2])
    np.testing.assert_array_equal(got["n_polysemantic"], [2, 0])
    np.testing.assert_array_equal(got["n_dead"], [1, 2])


def test_feature_colours_are_distinct_for_any_n():
    from bitjax.report.explorer import feature_colours

    for n in (1, 3, 10, 11, 100):
        c = feature_colours(n)
        assert len(c) == n == len(set(c))


@pytest.mark.integration
def test_the_neuron_view_in_headless_chromium(neuron_page, neuron_sweep):
    why = browser_missing()
    if why:
        pytest.skip(f"no headless browser for the explorer test: {why}")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from bitjax.analysis import neurons

    with headless_chromium() as driver:
        open_page(driver, neuron_page)
        assert _console(driver) == []

        def shown():
            return driver.execute_script(
                "const d = document.getElementById('neurons-dense');"
                "return d && d.data ? [d.data.map(t => t.y), d.layout.title.text] : null")

        ys, title = shown()
        # trace a holds feature a's share in every neuron
        np.testing.assert_allclose(np.asarray(ys).T, neurons.weight_shares(
            neuron_sweep.W_eff[0]), atol=0.02)
        assert "1 monosemantic · 2 polysemantic · 1 dead" in title
        driver.find_element(By.ID, "axis-seed").send_keys(Keys.ARROW_RIGHT)
        WebDriverWait(driver, 10).until(lambda d: shown()[1] != title)
        ys, title = shown()
        np.testing.assert_allclose(np.asarray(ys).T, neurons.weight_shares(
            neuron_sweep.W_eff[1]), atol=0.02)
        assert "2 monosemantic · 0 polysemantic · 2 dead" in title
        driver.find_element(By.ID, "kind-dense").click()
        assert not driver.find_element(By.ID, "neurons-dense").is_displayed()
        assert _console(driver) == []
