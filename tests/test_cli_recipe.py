"""The recipe flags of every experiment command (--schedule, --anneal-fraction, --lr,
--weight-decay, --init-scale): what they set, bad values, and resume."""

from __future__ import annotations

import json

import pytest

from experiments import _cli, intro


def _args(*argv):
    return _cli.build_parser(intro.EXPERIMENT).parse_args(list(argv))


def test_recipe_flags_set_every_part():
    args = _args("--preset", "tiny", "--schedule", "cosine", "--anneal-fraction", "0.1",
                 "--lr", "3e-3", "1e-2", "--weight-decay", "0", "--init-scale", "2")
    rec = _cli.recipe_overrides(args)
    assert rec == {"schedule": "cosine", "anneal_fraction": 0.1, "lr": (3e-3, 1e-2),
                   "weight_decay": (0.0,), "init_scale": 2.0}
    parts = _cli.resolve_configs(intro.EXPERIMENT, "tiny", None, None, rec)
    plain = _cli.resolve_configs(intro.EXPERIMENT, "tiny", None, None)
    for name, cfg in parts.items():
        assert (cfg.schedule, cfg.anneal_fraction, cfg.lr, cfg.weight_decay, cfg.init_scale) \
            == ("cosine", 0.1, (3e-3, 1e-2), (0.0,), 2.0)
        # Everything else is the preset's.
        assert cfg.replace(**{f: getattr(plain[name], f) for f in rec}) == plain[name]
    assert "cosine + annealed last 0.1 lr 0.003/0.01, init x2" in _cli._describe(
        parts["intro"])
    assert _cli.recipe_overrides(_args("--preset", "tiny")) == {}


@pytest.mark.parametrize("flags, message", [
    (["--schedule", "step"], "unknown schedule 'step'"),
    (["--anneal-fraction", "1.5"], "anneal_fraction must be a number in [0, 1)"),
    (["--init-scale", "0"], "init_scale must be a finite number > 0"),
    (["--lr", "-1"], "lr"),
])
def test_bad_recipe_values_exit_2(flags, message, capsys, tmp_path):
    code = _cli.main(intro.EXPERIMENT, ["--preset", "tiny", "--out", str(tmp_path / "r"),
                                        "--dry-run", *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_resume_refuses_a_changed_recipe(tmp_path, capsys):
    from bitjax.store.layout import EXPERIMENT_FILE

    out = tmp_path / "run"
    out.mkdir()
    parts = _cli.resolve_configs(intro.EXPERIMENT, "tiny", None, None)
    (out / EXPERIMENT_FILE).write_text(json.dumps({
        "experiment": "intro", "preset": "tiny",
        "parts": {k: c.to_dict() for k, c in parts.items()}}))
    before = sorted(p.name for p in out.iterdir())
    code = _cli.main(intro.EXPERIMENT, ["--out", str(out), "--resume", "--lr", "0.01"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--lr would change its recipe" in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_named_recipe_sets_its_fields_and_single_flags_override_them():
    rec = _cli.recipe_overrides(_args("--preset", "tiny", "--recipe", "committed"))
    assert rec == _cli.RECIPES["committed"]
    rec = _cli.recipe_overrides(_args("--preset", "tiny", "--recipe", "paper", "--lr", "3e-3"))
    assert rec == {**_cli.RECIPES["paper"], "lr": (3e-3,)}
    parts = _cli.resolve_configs(intro.EXPERIMENT, "tiny", None, None,
                                 _cli.recipe_overrides(_args("--recipe", "committed")))
    assert all(_cli.recipe_name(c) == "committed" for c in parts.values())
    assert _cli.recipe_name(parts["intro"].replace(lr=(1e-2,))) == "custom"


def test_the_committed_recipe_is_the_one_results_used():
    from bitjax.config import SweepConfig

    saved = json.loads((_cli._REPO_RESULTS / "intro" / "experiment.json").read_text())
    for d in saved["parts"].values():
        assert _cli.recipe_name(SweepConfig.from_dict(d)) == "committed"


@pytest.mark.integration  # a whole (tiny) run
def test_a_run_states_its_recipe_first_and_its_outputs_last(tmp_path, capsys):
    from experiments import uniform

    exp = _cli.Experiment("uniform", "tiny", {"tiny": uniform.PRESETS["tiny"]},
                          analyse=lambda parts, out: [], main_figure="none")
    assert _cli.main(exp, ["--preset", "tiny", "--recipe", "committed", "--out",
                           str(tmp_path / "r"), "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "recipe committed: cosine + annealed last 0.1 lr 0.003, weight decay 0" in cap.err
    # the summary and what was written go to stdout, progress and notices to stderr
    assert "uniform: wrote" in cap.out and "explorer:" in cap.out and "tables:" in cap.out
    assert "wrote" not in cap.err and "training 8 instances" in cap.err


def test_summary_names_the_main_figure():
    from pathlib import Path

    exp = _cli.Experiment("x", "x", {}, analyse=lambda parts, out: [], main_figure="b")
    files = [Path("o/metrics.csv"), Path("o/a.png"), Path("o/b.png"), Path("o/explorer.html")]
    text = _cli.summary(exp, Path("o"), files)
    assert "main figure: o/b.png" in text and "explorer:    o/explorer.html" in text
    first = _cli.Experiment("x", "x", {}, analyse=lambda parts, out: [])  # no main named
    assert "main figure: o/a.png" in _cli.summary(first, Path("o"), files)


def test_full_precision_first_is_a_recipe_flag():
    rec = _cli.recipe_overrides(_args("--preset", "tiny", "--fp-fraction", "0.5"))
    assert rec == {"fp_fraction": 0.5}
    parts = _cli.resolve_configs(intro.EXPERIMENT, "tiny", None, None, rec)
    cfg = parts["intro"]
    assert cfg.has_fp_phase and "dense first" in _cli._describe(cfg)
    assert _cli.recipe_name(cfg) == "custom"
