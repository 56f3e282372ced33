"""Storage: the run and experiment folder contract (:mod:`~bitjax.store.layout`: every file
name, parts, manifest, provenance), Orbax checkpoints (:mod:`~bitjax.store.checkpoint`), the
folder lock and status (:mod:`~bitjax.store.folder`) and atomic files, CSV, figures, git and
environment records (:mod:`~bitjax.store.files`). It imports nothing else of bitjax's stages:
training, analysis and report all read and write folders through it.
"""
