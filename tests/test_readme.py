"""The README's "The library" and "Analysing a finished sweep" blocks run as written.

A whole sweep of the README's size (1,000 steps) is trained: an end-to-end test, the second
tier.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _block(heading: str) -> str:
    section = README.read_text().split(f"## {heading}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


# Under the suite's filterwarnings = error: the README's own sweep must not warn (its
# history is dense enough for the convergence rule to judge every instance).
@pytest.mark.integration
def test_readme_library_and_analysis_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks write runs/demo relative to the working folder
    # use_cpu_devices() asks for one device per core; the suite runs on two whatever the
    # machine, so "one per core" is made to mean the two the backend already has.
    monkeypatch.setattr(os, "cpu_count", lambda: len(jax.devices("cpu")))
    ns: dict = {}
    exec(compile(_block("The library"), "README.md (The library)", "exec"), ns)
    result = ns["result"]
    assert result.finished and result.loss.shape == (24,)
    chex.assert_tree_all_finite(result.loss)

    exec(compile(_block("Analysing a finished sweep"), "README.md (Analysing)", "exec"), ns)
    ds, sweep, gap = ns["ds"], ns["sweep"], ns["gap"]
    assert dict(ds.loss.sizes) == {"kind": 2, "seed": 3, "feature_probability": 4,
                                   "importance": 1, "lr": 1, "weight_decay": 1}
    # The paired difference is the per-instance difference of the twins.
    i_t = sweep.select(kind="ternary", seed=1, feature_probability=0.3)
    i_d = sweep.select(kind="dense", seed=1, feature_probability=0.3)
    want = sweep.loss[i_t[0]] - sweep.loss[i_d[0]]
    got = float(gap.sel(seed=1, feature_probability=0.3).squeeze())
    assert np.isclose(got, want, rtol=1e-6)
    assert len(ns["df"]) == 24
    chex.assert_shape(ns["w"], (4, 5, 20))  # 4 sparsities of ternary seed 0
    assert (tmp_path / "runs" / "demo" / "d_star_ternary.png").stat().st_size > 0
