"""Explore: one self-contained interactive page (explorer.html) for any run folder.

Question: a sweep of 1,520 instances is forty static figures; a researcher wants to move
through sparsity, kind and seed and watch the geometry change. For the instance picked with a
slider per sweep axis, the page shows dense and every quantized kind side by side, each with
the paper's figure row (W^T W on [-1, 1], the bias, the feature norms coloured by
superposition, and the 2-D weight diagram where m <= 2), the run's D* and final-loss curves
against 1/(1-S) per kind (mean and band over seeds) with the selected instances marked, their
loss histories, and their divergence and convergence flags. The file needs no server and no
network (plotly.js is inlined); see :mod:`bitjax.explorer` for what it holds and how.

Command:  python -m experiments.explore RUN_DIR [--out FILE] [--title TEXT] [--screenshot [PNG]]
          python -m experiments.explore results/intro --screenshot
RUN_DIR is a run folder (with checkpoints/) or a multi-part experiment folder (results/
sparsity, results/correlated, results/phase: one page with a part selector). The page goes
to RUN_DIR/explorer.html unless --out names another file; --screenshot also opens it in
headless chromium (Debian's chromium + chromedriver and selenium) and saves a full-page PNG
(default RUN_DIR/explorer.png), printing the page's load timing.

Runtime: 1-6 s per committed run on the 2-core development machine after imports (loading
the checkpoints and packing: results/uniform 1.4 s, intro 1.1-2.3 s, the five correlated
parts 2.6-6.2 s, measured while other jobs kept the load at 6-10), plus 3-8 s for a
screenshot. Output: 4.90-4.98 MB per page, of which plotly.js is 4.82 MB.
Paper figure: the rows of "Superposition as a Function of Sparsity" (W^T W, b, feature norms
coloured by superposition), the introduction's 2-D weight diagrams and "Feature
Dimensionality"'s D* against 1/(1-S), for every instance of a sweep.

Exit codes: 0 written; 2 bad input (no such folder, not a run); 1 the page was written but
the screenshot could not be taken (no browser: the message says what is missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bitjax.explorer import (
    SIZE_LIMIT_BYTES,
    ExplorerError,
    browser_missing,
    screenshot,
    write_explorer,
)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.explore",
        description="Write a self-contained interactive explorer.html for a run folder.")
    ap.add_argument("run_dir", metavar="RUN_DIR", type=Path,
                    help="a run folder (with checkpoints/) or a multi-part experiment folder")
    ap.add_argument("--out", type=Path, default=None,
                    help="the HTML file to write (default RUN_DIR/explorer.html)")
    ap.add_argument("--title", default=None, help="page title (default: the folder's name)")
    ap.add_argument("--screenshot", nargs="?", type=Path, const=True, default=None,
                    metavar="PNG", help="also save a full-page screenshot taken in headless "
                    "chromium (default RUN_DIR/explorer.png)")
    return ap


def main(argv: list[str] | None = None) -> int:
    from experiments._runtime import start_tool

    if (code := start_tool()) is not None:  # one CPU device per core, as the experiments
        return code
    args = build_parser().parse_args(argv)
    run_dir: Path = args.run_dir
    out = args.out if args.out is not None else run_dir / "explorer.html"
    try:
        path = write_explorer(run_dir, out, title=args.title)
    except ExplorerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.2f} MB)")
    if size > SIZE_LIMIT_BYTES:
        print(f"warning: {path} is over the {SIZE_LIMIT_BYTES / 1e6:.0f} MB budget of a "
              "committed run", file=sys.stderr)
    if args.screenshot is not None:
        png = run_dir / "explorer.png" if args.screenshot is True else args.screenshot
        why = browser_missing()
        if why:
            print(f"error: no screenshot: {why}", file=sys.stderr)
            return 1
        info = screenshot(path, png)
        print(f"wrote {png}: page ready {info['ready_ms'] / 1000:.2f} s after navigation "
              f"(plotly.js run by {info['plotly_ms'] / 1000:.2f} s; main-thread CPU "
              f"{info['cpu_main_s']:.2f} s) in headless chromium")
        for message in info["console"]:
            print(f"browser console error: {message}", file=sys.stderr)
        if info["console"]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
