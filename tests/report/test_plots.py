"""bitjax.report.plots: the colour of every kind comes from the one kind table."""

from __future__ import annotations

from bitjax.layers import KINDS
from bitjax.report import plots


def test_every_kind_has_its_own_colour_from_the_kind_table():
    colours = {k: plots.kind_color(k) for k in KINDS}
    assert colours == {k: kind.colour for k, kind in KINDS.items()}
    assert "tab:gray" not in colours.values()  # grey is kept for what is not a kind
    assert len(set(colours.values())) == len(KINDS)


def test_a_name_that_is_not_a_kind_is_grey():
    assert plots.kind_color("ternary - dense") == "tab:gray"
