"""The shared boundary checks: each names the parameter, the value received and what is allowed."""

import numpy as np
import pytest
import torch

from paperlib.validate import check_int, check_labels, check_tensor, describe


def test_check_tensor_passes_valid_input_through():
    x = torch.linspace(-1, 1, 12).reshape(3, 4)
    assert check_tensor("x", x, ndim=2, dtype="floating", nonempty=True, finite=True, value_range=(-1, 1)) is x
    assert check_tensor("t", torch.arange(3), dtype="integer") is not None
    check_tensor("x", torch.full((2,), 1.0005), value_range=(-1, 1), tol=1e-3)  # within the tolerance


@pytest.mark.parametrize(
    ("kwargs", "x", "match"),
    [
        ({}, [1.0, 2.0], r"x must be a torch.Tensor, got list"),
        ({"ndim": 4}, torch.zeros(2, 3), r"x must have 4 dimensions, got shape \(2, 3\)"),
        ({"min_ndim": 2}, torch.zeros(3), r"at least 2 dimension"),
        ({"dtype": "floating"}, torch.zeros(2, dtype=torch.uint8), r"x must have a floating dtype .*got torch.uint8"),
        ({"dtype": "integer"}, torch.tensor([2.7]), r"x must have an integer dtype .*got torch.float32"),
        ({"dtype": "integer"}, torch.tensor([True]), r"got torch.bool"),
        ({"dtype": torch.float64}, torch.zeros(2), r"x must have torch.float64, got torch.float32"),
        ({"nonempty": True}, torch.zeros(0, 3, 4, 4), r"at least one sample .*got shape \(0, 3, 4, 4\)"),
        ({"finite": True}, torch.tensor([0.0, float("nan"), float("inf")]), r"x must be finite, got 2 NaN/inf"),
        ({"value_range": (-1, 1), "tol": 1e-3}, torch.tensor([0.0, 255.0]),
         r"x must lie in \[-1, 1\], got values in \[0, 255\]"),
        ({"value_range": (0, 1), "range_note": "fractions"}, torch.tensor([2.0]), r"\[0, 1\] \(fractions\)"),
    ],
)
def test_check_tensor_rejects(kwargs, x, match):
    with pytest.raises(ValueError, match=match):
        check_tensor("x", x, **kwargs)


def test_check_int():
    assert check_int("n", 3) == 3 and check_int("n", np.int64(4), 0, 10) == 4
    assert check_int("n", torch.tensor(5)) == 5
    for bad, match in [(2.7, "n must be an integer, got float 2.7"), (600.0, "integer"), (True, "integer"),
                       (torch.tensor(1.0), "integer"), ("3", "integer")]:
        with pytest.raises(ValueError, match=match):
            check_int("n", bad)
    with pytest.raises(ValueError, match="n must be in 1..3, got 4"):
        check_int("n", 4, 1, 3)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        check_int("n", 0, 1)


def test_check_labels():
    y = check_labels("y", torch.tensor([0, 2], dtype=torch.int32), 2, num_classes=3)
    assert y.dtype == torch.int64 and y.tolist() == [0, 2]
    assert check_labels("y", 1, 4).tolist() == [1, 1, 1, 1]  # a scalar is broadcast
    assert check_labels("y", [3, 0], 2, num_classes=3, allow_null=True).tolist() == [3, 0]
    with pytest.raises(ValueError, match=r"y must be integer class labels .*got torch.float32 \(e.g. 2.7"):
        check_labels("y", torch.tensor([2.7]), 1)
    with pytest.raises(ValueError, match=r"y must have shape \[B\] = \[3\]"):
        check_labels("y", torch.zeros(2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"y must be in 0..2 \(real classes; the null class 3 is not allowed here\), "
                                         r"got \[3\]"):
        check_labels("y", torch.tensor([0, 3]), 2, num_classes=3)
    with pytest.raises(ValueError, match=r"0..3 \(0..2 real classes, 3 = the null class\), got \[-1, 4\]"):
        check_labels("y", torch.tensor([-1, 4]), 2, num_classes=3, allow_null=True)


def test_describe():
    assert describe(torch.zeros(2, 3, dtype=torch.uint8)) == "torch.uint8 tensor of shape (2, 3)"
    assert describe([1]) == "list [1]"
