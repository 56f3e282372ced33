"""Explore: one self-contained interactive page (explorer.html) for any run folder.

Question: a sweep of 1,520 instances is forty static figures; a researcher wants to move
through sparsity, kind and seed and watch the geometry change. For the instance picked with a
slider per sweep axis, the page shows dense and every quantized kind side by side, each with
the paper's figure row (W^T W on [-1, 1], the bias, the feature norms coloured by
superposition, and the 2-D weight diagram where m <= 2), the run's D* and final-loss curves
against 1/(1-S) per kind (mean and band over seeds) with the selected instances marked, their
loss histories, and their divergence and convergence flags. The file needs no server and no
network (plotly.js is inlined, or shared by the pages of a results tree with
--plotlyjs-dir); see :mod:`bitjax.report.explorer` for what it holds and how.

Command:  python -m experiments.explore RUN_DIR [--out FILE] [--title TEXT]
              [--plotlyjs-dir DIR] [--screenshot [PNG]]
          python -m experiments.explore PAGE.html --screenshot [PNG]
          python -m experiments.explore results/intro --plotlyjs-dir results --screenshot
RUN_DIR is a run folder (with checkpoints/) or a multi-part experiment folder (results/
sparsity, results/correlated, results/phase: one page with a part selector). The page goes
to RUN_DIR/explorer.html unless --out names another file. By default it is self-contained
(plotly.js inlined, about 5 MB); --plotlyjs-dir DIR (the page's folder or one above it, such
as results/) writes plotly.js there once as plotly-<version>.min.js and the page loads it by
its relative path (a committed page: well under 1 MB). --screenshot also opens the page in
headless chromium (Debian's chromium + chromedriver and selenium) and saves a full-page PNG
(default: next to the page, its name with .png), printing the page's load timing; given an
explorer page (.html) instead of a run, it only takes the screenshot.

Runtime: 1-6 s per committed run on the 2-core development machine after imports (loading
the checkpoints and packing: results/uniform 1.4 s, intro 1.1-2.3 s, the five correlated
parts 2.6-6.2 s, measured while other jobs kept the load at 6-10; results/phase 34 s and
results/convergence 108 s), plus 3-8 s for a screenshot. Output: a self-contained page is
plotly.js (4.82 MB) plus the run's data; with --plotlyjs-dir results the committed pages are
0.15 MB (intro) to 0.78 MB (phase, its histories thinned), results/convergence (18 parts)
1.11 MB, plus the one shared plotly-<version>.min.js.
Paper figure: the rows of "Superposition as a Function of Sparsity" (W^T W, b, feature norms
coloured by superposition), the introduction's 2-D weight diagrams and "Feature
Dimensionality"'s D* against 1/(1-S), for every instance of a sweep.

Exit codes: 0 written; 2 bad input (no such folder, not a run, a --plotlyjs-dir not above
the page); 1 the page was written but the screenshot could not be taken (no browser: the
message says what is missing) or the page reported an error in the browser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bitjax.report.explorer import (
    ExplorerError,
    browser_missing,
    page_budget,
    screenshot,
    write_explorer,
)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.explore",
        description="Write an interactive explorer.html for a run folder (self-contained "
        "unless --plotlyjs-dir), or take a screenshot of an explorer page.",
        allow_abbrev=False)
    ap.add_argument("run_dir", metavar="RUN_DIR", type=Path,
                    help="a run folder (with checkpoints/) or a multi-part experiment folder; "
                    "or an explorer page (.html) to take a --screenshot of")
    ap.add_argument("--out", type=Path, default=None,
                    help="the HTML file to write (default RUN_DIR/explorer.html)")
    ap.add_argument("--title", default=None, help="page title (default: the folder's name)")
    ap.add_argument("--plotlyjs-dir", type=Path, default=None, metavar="DIR",
                    help="share plotly.js: write it once into DIR (the page's folder or one "
                    "above it, e.g. results) as plotly-<version>.min.js and load it from "
                    "there (default: inline it; the page is then self-contained, ~5 MB)")
    ap.add_argument("--screenshot", nargs="?", type=Path, const=True, default=None,
                    metavar="PNG", help="also save a full-page screenshot taken in headless "
                    "chromium (default: next to the page, explorer.png)")
    return ap


def main(argv: list[str] | None = None) -> int:
    from experiments._runtime import start_tool

    if (code := start_tool()) is not None:  # one CPU device per core, as the experiments
        return code
    ap = build_parser()
    args = ap.parse_args(argv)
    run_dir: Path = args.run_dir
    if run_dir.suffix.lower() in (".html", ".htm"):  # an explorer page: screenshot only
        if args.screenshot is None or args.out or args.title or args.plotlyjs_dir:
            ap.error(f"{run_dir} is a page, not a run folder: give it with --screenshot "
                     "[PNG] and nothing else (or give the run folder to write a page)")
        if not run_dir.is_file():
            print(f"error: {run_dir} does not exist", file=sys.stderr)
            return 2
        return _screenshot(run_dir, args.screenshot)
    out = args.out if args.out is not None else run_dir / "explorer.html"
    shared = args.plotlyjs_dir is not None
    try:
        path = write_explorer(run_dir, out, title=args.title,
                              plotlyjs=args.plotlyjs_dir if shared else "inline")
    except ExplorerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size, budget = path.stat().st_size, page_budget(shared)
    print(f"wrote {path} ({size / 1e6:.2f} MB)")
    _record(run_dir, path, args)
    if size > budget:
        print(f"warning: {path} is over the {budget / 1e6:.1f} MB budget of a committed page"
              + ("" if shared else " (--plotlyjs-dir shares plotly.js, 4.8 MB of it)"),
              file=sys.stderr)
    if args.screenshot is not None:
        return _screenshot(path, args.screenshot)
    return 0


def _record(run_dir: Path, page: Path, args: argparse.Namespace) -> None:
    """A page written into a folder whose manifest.json lists its files (a committed run) is
    recorded there: which commit and command drew it, and its new checksum (the manifest's
    own checksum of an older page would no longer match)."""
    from bitjax.store import layout

    folder = run_dir if run_dir.is_dir() else run_dir.parent
    if not page.resolve().is_relative_to(folder.resolve()):
        return  # a page written elsewhere is not part of the run's record
    try:
        layout.add_manifest_record(folder, "explorer_drawn", {
            "command": "python -m experiments.explore " + " ".join(_argv(args))},
            [page])
    except ValueError as e:  # a manifest that is not JSON is reported, never replaced
        print(f"warning: {page} not recorded in {folder}/manifest.json: {e}", file=sys.stderr)


def _argv(args: argparse.Namespace) -> list[str]:
    out = [str(args.run_dir)]
    for flag, value in (("--out", args.out), ("--title", args.title),
                        ("--plotlyjs-dir", args.plotlyjs_dir)):
        if value is not None:
            out += [flag, str(value)]
    return out


def _screenshot(page: Path, png: Path | bool) -> int:
    """Screenshot ``page`` (default: next to it, its name with .png); 0 done, 1 not."""
    png = page.with_suffix(".png") if png is True else png
    why = browser_missing()
    if why:
        print(f"error: no screenshot: {why}", file=sys.stderr)
        return 1
    try:
        info = screenshot(page, png)
    except RuntimeError as e:  # the page itself reported an error (open_page)
        print(f"error: no screenshot: {e}", file=sys.stderr)
        return 1
    print(f"wrote {png}: page ready {info['ready_ms'] / 1000:.2f} s after navigation "
          f"(plotly.js run by {info['plotly_ms'] / 1000:.2f} s; main-thread CPU "
          f"{info['cpu_main_s']:.2f} s) in headless chromium")
    for message in info["console"]:
        print(f"browser console: {message}", file=sys.stderr)
    return 1 if info["console"] else 0

if __name__ == "__main__":
    sys.exit(main())
