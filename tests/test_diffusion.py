import pytest
import torch

from paperlib.diffusion import (
    alpha_bar,
    ddim_decode,
    ddim_grid,
    ddim_invert,
    ddim_sample,
    guided_eps,
    linear_beta_schedule,
    predict_x0_from_eps,
    q_sample,
    two_stage_sample,
)
from paperlib.toy import NULL_CLASS, sample_toy, toy_alpha_bar

AB = alpha_bar(linear_beta_schedule(1000))


def dirac_eps(mu: torch.Tensor):
    """Exact noise predictor for data concentrated at ``mu``: DDIM trajectories are straight, so
    inversion and decoding are exact inverses on any grid (t > 0)."""

    def eps(x, t, y):
        ab = AB[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (x - ab.sqrt() * mu) / (1 - ab).sqrt()

    return eps


def gaussian_eps(mu: torch.Tensor, s: float):
    """Exact noise predictor for data ~ N(mu, s^2 I)."""

    def eps(x, t, y):
        ab = AB[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * s**2 + 1 - ab)

    return eps


def test_schedule_values():
    betas = linear_beta_schedule(1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    ab = alpha_bar(betas)
    assert ab.shape == (1001,) and ab[0] == 1.0
    assert torch.all(ab.diff() < 0)
    assert ab[1] == pytest.approx(1 - 1e-4)
    assert ab[-1] == pytest.approx(torch.prod(1 - betas).item())


def test_q_sample_and_x0_prediction_are_inverse():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 10, 500, 1000])
    xt = q_sample(x0, t, eps, AB)
    for i in range(4):
        assert torch.allclose(predict_x0_from_eps(xt[i], eps[i], AB[t[i]]), x0[i], atol=1e-8)


def test_grid_and_bad_times():
    assert ddim_grid(1000, 100).tolist()[:3] == [0, 10, 20]
    assert ddim_grid(1000, 100)[-1] == 1000
    with pytest.raises(ValueError, match="num_steps"):
        ddim_grid(1000, 7)
    eps = dirac_eps(torch.zeros(2))
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="t_to=605"):
        ddim_invert(eps, x, torch.zeros(3, dtype=torch.long), AB, t_to=605)
    with pytest.raises(ValueError, match="t_from < t_to"):
        ddim_invert(eps, x, torch.zeros(3, dtype=torch.long), AB, t_to=500, t_from=600)
    with pytest.raises(ValueError, match="t_from > t_to"):
        ddim_decode(eps, x, torch.zeros(3, dtype=torch.long), AB, t_from=0)
    with pytest.raises(ValueError, match="y must have shape"):
        ddim_decode(eps, x, torch.zeros(4, dtype=torch.long), AB, t_from=500)


@pytest.mark.parametrize("num_steps", [10, 100])
def test_invert_decode_exact_on_dirac_denoiser(num_steps):
    mu = torch.tensor([0.3, -1.2], dtype=torch.float64)
    eps = dirac_eps(mu)
    g = torch.Generator().manual_seed(1)
    t0 = 1000 // num_steps
    x = q_sample(mu.expand(5, 2), torch.full((5,), t0), torch.randn(5, 2, generator=g, dtype=torch.float64), AB)
    y = torch.zeros(5, dtype=torch.long)
    xt = ddim_invert(eps, x, y, AB, t_to=600, t_from=t0, num_steps=num_steps)
    back = ddim_decode(eps, xt, y, AB, t_from=600, t_to=t0, num_steps=num_steps)
    assert torch.allclose(back, x, atol=1e-10)
    # The trajectory is the closed form sqrt(ab) mu + sqrt(1 - ab) eps with a constant eps.
    e = (x - AB[t0].sqrt() * mu) / (1 - AB[t0]).sqrt()
    assert torch.allclose(xt, AB[600].sqrt() * mu + (1 - AB[600]).sqrt() * e, atol=1e-10)


def test_invert_decode_converges_on_gaussian_denoiser():
    mu, s = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5
    eps = gaussian_eps(mu, s)
    x0 = mu + s * torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.zeros(64, dtype=torch.long)
    errs = []
    for n in (10, 100, 1000):
        xt = ddim_invert(eps, x0, y, AB, t_to=600, num_steps=n)
        errs.append((ddim_decode(eps, xt, y, AB, 600, num_steps=n) - x0).norm(dim=1).mean().item())
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.1 * errs[0] and errs[2] < 0.01  # first-order scheme: error ~ 1/num_steps


def test_reconstruction_on_trained_toy(toy_model, toy_cfg):
    x, y = sample_toy(256, 3, toy_cfg)
    ab = toy_alpha_bar(toy_cfg)
    xt = ddim_invert(toy_model, x, y, ab, 600)
    rec = ddim_decode(toy_model, xt, y, ab, 600)
    err = (rec - x).norm(dim=1)
    assert err.median() < 0.05, err.median()
    assert (xt - x).norm(dim=1).median() > 0.5  # the latent really moved


def test_cfg_formula_and_null_class():
    calls = []

    def eps(x, t, y):
        calls.append(y.clone())
        return torch.where(y[:, None] == 9, torch.ones_like(x), 3 * torch.ones_like(x))

    x, y = torch.zeros(2, 1), torch.tensor([0, 1])
    assert torch.allclose(guided_eps(eps, x, 5, y, 1.0), torch.full((2, 1), 3.0))
    assert len(calls) == 1
    out = guided_eps(eps, x, 5, y, 2.5, null_class=9)
    assert torch.allclose(out, torch.full((2, 1), 1 + 2.5 * (3 - 1)))
    with pytest.raises(ValueError, match="null_class"):
        guided_eps(eps, x, 5, y, 2.0)


def test_sampling_is_seeded_and_two_stage_limits(toy_model, toy_cfg):
    ab = toy_alpha_bar(toy_cfg)
    y = torch.tensor([1] * 8)
    a = ddim_sample(toy_model, (8, 2), y, ab, generator=7, num_steps=50)
    b = ddim_sample(toy_model, (8, 2), y, ab, generator=torch.Generator().manual_seed(7), num_steps=50)
    assert torch.equal(a, b)
    assert not torch.equal(a, ddim_sample(toy_model, (8, 2), y, ab, generator=8, num_steps=50))
    full_cond = two_stage_sample(toy_model, (8, 2), y, ab, t_switch=1000, null_class=NULL_CLASS, generator=7)
    assert torch.allclose(full_cond, a, atol=1e-6)
    uncond = ddim_sample(toy_model, (8, 2), torch.full((8,), NULL_CLASS), ab, generator=7, num_steps=50)
    assert torch.allclose(two_stage_sample(toy_model, (8, 2), y, ab, 0, NULL_CLASS, 7), uncond, atol=1e-6)
    with pytest.raises(ValueError, match="t_switch"):
        two_stage_sample(toy_model, (8, 2), y, ab, 510, NULL_CLASS, 7)


def test_clip_x0_keeps_decodes_in_range():
    ab = alpha_bar(linear_beta_schedule())

    def wild(x, t, y):  # a poor noise model whose x0 predictions leave [-1, 1]
        return -3.0 * x

    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.long)
    free = ddim_decode(wild, x_T, y, ab, 1000, 0, num_steps=10)
    clipped = ddim_decode(wild, x_T, y, ab, 1000, 0, num_steps=10, clip_x0=True)
    assert free.abs().max() > 1 and clipped.abs().max() <= 1.0
    # Clipping is a no-op when the predictions stay inside [-1, 1].
    def calm(x, t, y):
        return torch.zeros_like(x)
    x = torch.full((2, 2), 0.01)
    torch.testing.assert_close(ddim_decode(calm, x, y[:2], ab, 500, 0, num_steps=10, clip_x0=True),
                               ddim_decode(calm, x, y[:2], ab, 500, 0, num_steps=10))


def test_ddim_invert_rejects_images_outside_the_data_range():
    """Float images in 0..255 handed to a [-1, 1] model are rejected; latents at t > 0 are not range-checked."""
    eps = dirac_eps(torch.zeros(3, dtype=torch.float64))

    class PixelModel:  # declares its clean-data range, like ClassConditionalUNet
        data_range = (-1.0, 1.0)

        def __call__(self, x, t, y):
            return eps(x, t, y)

    x255 = torch.full((2, 3), 200.0, dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x must lie in \[-1, 1\] \(the model's data range.*got values in \[200, 200"):
        ddim_invert(PixelModel(), x255, y, AB, 500, num_steps=10)
    with pytest.raises(ValueError, match=r"x must lie in \[-1, 1\]"):
        ddim_invert(eps, x255, y, AB, 500, num_steps=10, data_range=(-1.0, 1.0))
    ddim_invert(PixelModel(), torch.full((2, 3), 1.0005, dtype=torch.float64), y, AB, 500, num_steps=10)  # tolerance
    ddim_invert(PixelModel(), x255, y, AB, 500, t_from=100, num_steps=10)  # a noisy latent: any finite value
    ddim_invert(eps, x255, y, AB, 500, num_steps=10)  # no declared range (toy data, VAE latents): unchecked


def test_ddim_rejects_non_finite_latents():
    eps = dirac_eps(torch.zeros(2, dtype=torch.float64))
    x = torch.tensor([[0.1, float("nan")], [0.2, 0.3]], dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="x must be finite, got 1 NaN/inf"):
        ddim_invert(eps, x, y, AB, 500, num_steps=10)
    with pytest.raises(ValueError, match="x_t must be finite"):
        ddim_decode(eps, x.clone().fill_(float("inf")), y, AB, 500, num_steps=10)
    with pytest.raises(ValueError, match="alpha_bar must be finite"):
        ddim_decode(eps, x.nan_to_num(), y, torch.cat([AB[:-1], torch.tensor([float("nan")], dtype=AB.dtype)]), 500,
                    num_steps=10)
    with pytest.raises(ValueError, match=r"betas must have values in \(0, 1\), got values in \[nan"):
        alpha_bar(torch.tensor([0.1, float("nan")]))


def test_ddim_rejects_empty_batches():
    eps = dirac_eps(torch.zeros(2, dtype=torch.float64))
    empty, y = torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x must hold at least one sample .*got shape \(0, 2\)"):
        ddim_invert(eps, empty, y, AB, 500, num_steps=10)
    with pytest.raises(ValueError, match=r"x_t must hold at least one sample"):
        ddim_decode(eps, empty, y, AB, 500, num_steps=10)
    with pytest.raises(ValueError, match=r"shape must be \(B, \*D\) with positive integer sizes, got \(0, 2\)"):
        ddim_sample(eps, (0, 2), y, AB, generator=0, num_steps=10)
    with pytest.raises(ValueError, match=r"shape must be"):
        two_stage_sample(eps, (0, 2), y, AB, 500, null_class=2, generator=0, num_steps=10)


def test_ddim_rejects_float_labels_times_and_bad_dtypes():
    eps = dirac_eps(torch.zeros(2, dtype=torch.float64))
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"y must be integer class labels .*got torch.float32 \(e.g. 2.7"):
        ddim_invert(eps, x, torch.tensor([2.7, 1.0]), AB, 500, num_steps=10)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="t_to must be an integer, got float 600.5"):
        ddim_invert(eps, x, y, AB, 600.5, num_steps=10)  # not silently truncated to 600
    with pytest.raises(ValueError, match="num_steps must be an integer"):
        ddim_decode(eps, x, y, AB, 500, num_steps=10.0)
    with pytest.raises(ValueError, match="x must have a floating dtype .*got torch.uint8"):
        ddim_invert(eps, torch.zeros(2, 2, dtype=torch.uint8), y, AB, 500, num_steps=10)
    with pytest.raises(ValueError, match="guidance_scale must be finite"):
        ddim_decode(eps, x, y, AB, 500, num_steps=10, guidance_scale=float("nan"), null_class=2)
    with pytest.raises(ValueError, match="null_class"):
        ddim_decode(eps, x, y, AB, 500, num_steps=10, guidance_scale=3.0)


def test_q_sample_rejects_bad_times_and_shapes():
    x0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t must be in 0..T = 0..1000, got values in 5..1001"):
        q_sample(x0, torch.tensor([5, 1001]), torch.zeros(2, 3), AB)
    with pytest.raises(ValueError, match="t must have an integer dtype"):
        q_sample(x0, torch.tensor([5.5, 10.0]), torch.zeros(2, 3), AB)
    with pytest.raises(ValueError, match=r"eps must have the shape of x0 \(2, 3\)"):
        q_sample(x0, torch.tensor([5, 10]), torch.zeros(2, 4), AB)


def test_sampling_leaves_the_global_rng_alone(toy_model, toy_cfg):
    ab = toy_alpha_bar(toy_cfg)
    y = torch.ones(5, dtype=torch.long)
    for call in (
        lambda: ddim_sample(toy_model, (5, 2), y, ab, generator=3, num_steps=10, guidance_scale=2.0,
                            null_class=NULL_CLASS),
        lambda: two_stage_sample(toy_model, (5, 2), y, ab, t_switch=500, null_class=NULL_CLASS, generator=3,
                                 num_steps=10),
    ):
        torch.manual_seed(11)
        call()
        assert torch.equal(torch.random.get_rng_state(), torch.manual_seed(11).get_state())
