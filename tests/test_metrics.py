import pytest
import torch

from paperlib.metrics import sliced_wasserstein


def test_sliced_wasserstein_properties():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, b) < 0.05
    # a pure shift by s along a direction averages |s cos(theta)| over directions: 2 s / pi in 2-D
    shifted = sliced_wasserstein(a, a + torch.tensor([1.0, 0.0]), n_projections=4096)
    assert shifted == pytest.approx(2 / torch.pi, rel=0.03)
    assert sliced_wasserstein(a, b, generator=3) == sliced_wasserstein(a, b, generator=3)
    with pytest.raises(ValueError, match="same d"):
        sliced_wasserstein(a, torch.zeros(5, 3))
