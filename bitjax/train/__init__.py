"""Training: the compiled program (:mod:`~bitjax.train.program`), the memory planner, device
and process distribution, the chunked :class:`~bitjax.train.trainer.Trainer`, the run loop
(:func:`~bitjax.train.run.run_sweep`) and the policies it composes as hooks
(:mod:`~bitjax.train.hooks`), and warm starts. It builds on the core (config, layers, quant,
data, lattice, convergence) and storage, and never imports analysis or report.
"""
