"""The book's figures: what each plotting function draws (points, lines, positions), not how it looks."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

from paperlib import plotting


def test_method_scatter_draws_one_point_per_run_in_the_methods_colour() -> None:
    index = pd.MultiIndex.from_tuples([("vanilla", 0), ("vanilla", 1), ("cadistill", 0)], names=["method", "seed"])
    frame = pd.DataFrame({"clean": [90.0, 91.0, 92.0], "worst": [10.0, 12.0, 20.0]}, index=index)
    fig = plotting.method_scatter({"cifar10": frame, "shapes": frame[["clean"]]}, "clean",
                                  {"worst": "worst (%)"}, "clean (%)")
    ax, empty = fig.axes
    got = {c.get_label(): c.get_offsets().data.tolist() for c in ax.collections}
    assert got == {"vanilla (2)": [[90.0, 10.0], [91.0, 12.0]], "cadistill (1)": [[92.0, 20.0]]}
    colour = ax.collections[1].get_facecolor()[0][:3]
    np.testing.assert_allclose(colour, matplotlib.colors.to_rgb(plotting.METHOD_COLORS["cadistill"]))
    assert not empty.collections and empty.texts[0].get_text() == "not run"  # the column is missing


def test_training_curves_take_their_positions() -> None:
    runs = np.array([[0.9, 0.5, 0.3], [0.8, 0.5, 0.1]])
    fig = plotting.training_curves({"cifar10": {"vanilla": runs}}, "acc (%)", percent=True, x=[0, 1, 2],
                                   xlabel="severity")
    (line,) = fig.axes[0].lines
    np.testing.assert_allclose(line.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(line.get_ydata(), [85.0, 50.0, 20.0])
    assert fig.axes[0].get_xlabel() == "severity"
    default = plotting.training_curves({"p": {"vanilla": runs}}, "acc")
    np.testing.assert_allclose(default.axes[0].lines[0].get_xdata(), [1, 2, 3])  # epochs by default
    with pytest.raises(ValueError):
        plotting.training_curves({"p": {"vanilla": runs}}, "acc", x=[0, 1])


def test_nmi_vs_k_puts_clarid_at_its_mean_k_star_and_cfg_as_a_line() -> None:
    methods = ["original", "reconstruction", "k1", "k16", "k2", "clarid", "random", "cfg3"]
    nmi = [0.5, 0.52, 0.55, 0.9, 0.6, 0.7, 0.51, 0.95]
    table = pd.DataFrame({"NMI": nmi, "std": [0.01] * 8},
                         index=pd.MultiIndex.from_product([["shapes"], methods], names=["dataset", "method"]))
    labels = {"clarid": "CLARID (k*)", "cfg3": "CFG w=3", "original": "originals", "random": "random"}
    fig = plotting.nmi_vs_k(table, plotting.METHOD_COLORS, k_star={"shapes": (4.2, 1.5)}, labels=labels,
                            titles={"shapes": "Shapes"})
    ax = fig.axes[0]
    assert ax.get_title() == "Shapes"
    fixed = next(c for c in ax.containers if c.get_label() == "fixed $k$")
    np.testing.assert_allclose(np.asarray(fixed.lines[0].get_xdata(), float), [1, 2, 16])  # numeric order
    star = next(c for c in ax.containers if c.get_label() == "CLARID (k*)")
    np.testing.assert_allclose(np.asarray(star.lines[0].get_xydata(), float), [[4.2, 0.7]])
    flat = {line.get_label(): line.get_ydata()[0] for line in ax.lines if line.get_label() in ("CFG w=3", "originals")}
    assert flat == {"CFG w=3": 0.95, "originals": 0.5}
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "clarid" not in names and "CLARID (k*)" in names
