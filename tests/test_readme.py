"""The README's "Analysing a finished sweep" block runs as written against a real run."""

from __future__ import annotations

import re
from pathlib import Path

from experiments import _cli, uniform

README = Path(__file__).resolve().parent.parent / "README.md"


def _analysis_block() -> str:
    text = README.read_text()
    section = text.split("## Analysing a finished sweep", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_analysis_block_runs(tmp_path, monkeypatch):
    run = tmp_path / "results" / "uniform"
    assert _cli.main(uniform.EXPERIMENT, ["--preset", "tiny", "--seeds", "2", "--out", str(run),
                                          "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path)  # the block loads "results/uniform" and saves a PNG here
    namespace: dict = {}
    exec(compile(_analysis_block(), "README.md", "exec"), namespace)
    assert len(namespace["idx"]) == 4  # tiny: 4 probabilities x 1 kind x 2 seeds -> seed 0
    assert namespace["w"].shape == (4, 3, 12)
    assert (tmp_path / "d_star_ternary.png").stat().st_size > 0
