"""Report: tables written from the labelled grid (:mod:`~bitjax.report.tables`), matplotlib
figures (:mod:`~bitjax.report.plots`) and the interactive explorer
(:mod:`~bitjax.report.explorer`). It draws what analysis computed; nothing below imports it.
"""
