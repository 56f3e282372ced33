"""SweepConfig warns when a vector-valued axis looks like one per-feature vector written
as separate values (a sweep n times too large)."""

from __future__ import annotations

import warnings

import pytest

from bitjax.config import SweepConfig


def test_n_scalars_on_a_vector_axis_warn():
    with pytest.warns(UserWarning, match=r"importance=\(vector,\)"):
        cfg = SweepConfig(n_features=3, n_hidden=2, importance=(1.0, 0.5, 0.25))
    assert len(cfg.importance) == 3  # still three settings: the warning changes nothing
    with pytest.warns(UserWarning, match=r"feature_probability=\(vector,\)"):
        SweepConfig(n_features=2, n_hidden=1, feature_probability=(1.0, 0.5))


def test_vectors_and_other_counts_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SweepConfig(n_features=3, n_hidden=2, importance=((1.0, 0.5, 0.25),))
        SweepConfig(n_features=3, n_hidden=2, importance=(1.0, 0.5))
        SweepConfig(n_features=1, n_hidden=1, importance=(1.0,))
