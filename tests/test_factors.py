"""Factor-by-factor measurements on shapes."""

import torch
from torch import nn

from paperlib.data import make_shapes
from paperlib.factors import factor_changes, foreground_color, pixel_change


class Oracle(nn.Module):
    """Returns fixed logits for a known batch (stands in for a trained classifier or probe)."""

    def __init__(self, targets):
        super().__init__()
        self.targets = targets

    def forward(self, x):
        return nn.functional.one_hot(self.targets[: len(x)], 10).float()


def test_foreground_color_and_pixel_change_are_exact():
    d = make_shapes(20, 0, 16)
    torch.testing.assert_close(foreground_color(d.images, d.masks), d.factors["fg_color"], atol=1e-6, rtol=0)
    other = d.images.clone()
    other[:, :, ~d.masks[0]] = 0  # change only outside image 0's mask
    change = pixel_change(d.images, d.images, d.masks)
    assert (change["inside"] == 0).all() and (change["outside"] == 0).all()
    c0 = pixel_change(d.images[:1], other[:1], d.masks[:1])
    assert c0["inside"].item() == 0 and c0["outside"].item() > 0


def test_factor_changes_of_identity_outputs():
    d = make_shapes(12, 1, 16)
    clf = {"a": Oracle(d.labels)}
    probes = {"bg_family": Oracle(d.factors["bg_family"]), "class_from_bg": Oracle(d.labels)}
    t = factor_changes(d, {"identity": d.images.clone()}, clf, probes)
    assert t.loc["identity", "class kept"] == 1.0 and t.loc["identity", "Δ fg colour"] == 0.0
    assert t.loc["identity", "change inside fg"] == 0.0 and t.loc["identity", "bg family kept"] == 1.0
    assert list(t.index) == ["original", "identity"]
