"""Analysis: the loaded labelled grid (:mod:`~bitjax.analysis.results`), per-instance
metrics (:mod:`~bitjax.analysis.metrics`: the represented threshold, the m=2 and the
extra-feature classifiers), grids and paired loss gaps (:mod:`~bitjax.analysis.grid`),
onsets (:mod:`~bitjax.analysis.onsets`), correlated geometry
(:mod:`~bitjax.analysis.geometry`), what a ternary model can represent and its exact optima
(:mod:`~bitjax.analysis.representable`), best-known ternary solutions
(:mod:`~bitjax.analysis.best_ternary`, :mod:`~bitjax.analysis.estimator`), statistics and
verdicts. It reads run folders through storage and never imports training or report.
"""
