"""ClassConditionalUNet: eps interface, null class, truncated features vs a full forward with hooks."""

import pytest
import torch

from paperlib.clarid import extraneous_directions
from paperlib.models import NUM_TIMESTEPS, CDMConfig, ClassConditionalUNet, check_layer_syntax, num_parameters

TINY = CDMConfig(sample_size=16, num_classes=4, block_out_channels=(8, 16, 16), attention_levels=(2,),
                 norm_num_groups=4, attention_head_dim=8)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return ClassConditionalUNet(TINY).eval()


def _hooked(model, x, t, y):
    acts = {}
    u = model.unet
    blocks = {"conv_in": u.conv_in, "mid": u.mid_block,
              **{f"down.{i}": b for i, b in enumerate(u.down_blocks)},
              **{f"up.{i}": b for i, b in enumerate(u.up_blocks)}}

    def keep(name):
        def hook(_, __, out):
            acts[name] = out[0] if isinstance(out, tuple) else out
        return hook

    handles = [b.register_forward_hook(keep(n)) for n, b in blocks.items()]
    try:
        eps = model(x, t, y)
    finally:
        for h in handles:
            h.remove()
    return eps, acts


def test_eps_shape_and_labels(unet):
    x = torch.randn(3, 3, 16, 16)
    eps = unet(x, torch.tensor([0, 500, 999]), torch.tensor([0, 3, unet.null_class]))
    assert eps.shape == x.shape
    assert unet.null_class == 4
    # The label changes the prediction (class embeddings are wired in).
    a = unet(x[:1], torch.tensor([500]), torch.tensor([0]))
    b = unet(x[:1], torch.tensor([500]), torch.tensor([1]))
    assert not torch.allclose(a, b)


@torch.no_grad()
def test_truncated_features_match_full_forward_hooks(unet):
    g = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([10, 700]), torch.tensor([1, 4])
    eps, acts = _hooked(unet, x, t, y)
    assert set(acts) == set(unet.layer_names())
    for name in unet.layer_names():
        torch.testing.assert_close(unet.features(x, t, y, name), acts[name], rtol=1e-5, atol=1e-5)
    pooled = unet.pooled_features(x, t, y, "mid")
    assert pooled.shape == (2, 16)
    torch.testing.assert_close(pooled, acts["mid"].mean((-2, -1)))


def test_bad_inputs(unet):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="layer must be one of"):
        unet.features(x, 0, 0, "mid_block")
    with pytest.raises(ValueError, match="y must be in 0..4"):
        unet(x, torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match=r"x_t must be \[B, 3, 16, 16\]"):
        unet(torch.randn(1, 3, 8, 8), 0, 0)
    with pytest.raises(ValueError, match="attention_levels"):
        ClassConditionalUNet(CDMConfig(attention_levels=(5,)))
    with pytest.raises(ValueError, match="divisible"):
        ClassConditionalUNet(CDMConfig(sample_size=18))


def test_config_roundtrip_and_size():
    cfg = CDMConfig()
    assert CDMConfig.from_dict(cfg.to_dict()) == cfg
    torch.manual_seed(0)
    assert 1.0e6 < num_parameters(ClassConditionalUNet(cfg)) < 1.3e6  # the book's 1.1M-parameter CDM


def test_jacobian_through_unet_attention(unet):
    """Forward-mode AD through diffusers attention works (math SDPA) and agrees with the exact SVD."""
    x = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(2))

    def f(z):
        return unet.features(z, torch.full((len(z),), 600), torch.full((len(z),), 2), "mid")

    V_ex, s_ex = extraneous_directions(f, x, 4, "exact")
    V_it, s_it = extraneous_directions(f, x, 4, "subspace", tol=1e-6, max_iter=300, generator=0)
    torch.testing.assert_close(s_it, s_ex, rtol=1e-3, atol=1e-5)
    overlap = torch.linalg.svdvals(V_ex.T @ V_it)
    assert overlap.min() > 0.999


def test_forward_rejects_bad_times_dtypes_and_batches(unet):
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"t must be in 0..T = 0..1000, got values in 5000..5000"):
        unet(x, 5000, 0)
    with pytest.raises(ValueError, match=r"t must be in 0..T = 0..1000, got values in -1..3"):
        unet.features(x, torch.tensor([-1, 3]), 0)
    with pytest.raises(ValueError, match="t must have an integer dtype .*got torch.float32"):
        unet(x, torch.tensor([600.5, 600.0]), 0)
    with pytest.raises(ValueError, match=r"x_t must have a floating dtype .*got torch.uint8"):
        unet(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), 0, 0)
    with pytest.raises(ValueError, match=r"x_t must hold at least one sample .*got shape \(0, 3, 16, 16\)"):
        unet(torch.zeros(0, 3, 16, 16), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x_t must be finite, got 1 NaN/inf"):
        unet.pooled_features(nan, 0, 0)
    with pytest.raises(ValueError, match=r"y must have an integer dtype .*got torch.float32"):
        unet(x, 10, torch.tensor([2.7, 1.0]))  # not silently truncated to 2
    with pytest.raises(ValueError, match=r"y must have shape \[B\] = \[2\]"):
        unet(x, 10, torch.tensor([0, 1, 2]))


def test_time_range_is_not_part_of_the_weights_or_config():
    torch.manual_seed(0)
    short = ClassConditionalUNet(TINY, num_timesteps=500)
    assert short.num_timesteps == 500 and NUM_TIMESTEPS == 1000
    with pytest.raises(ValueError, match=r"0..T = 0..500"):
        short(torch.randn(1, 3, 16, 16), 600, 0)
    assert ClassConditionalUNet(TINY).state_dict().keys() == short.state_dict().keys()
    assert "num_timesteps" not in TINY.to_dict()


def test_layer_syntax():
    for name in ("conv_in", "mid", "down.0", "up.12"):
        assert check_layer_syntax("layer", name) == name
    for bad in ("foo", "down", "down.", "down.01", "up.-1", "mid_block", 3):
        with pytest.raises(ValueError, match=r"layer must be a layer name of the form conv_in \| down.\{i\}"):
            check_layer_syntax("layer", bad)


def test_the_unet_is_a_cdm_in_pixel_space(unet):
    from paperlib.models import CDM, clips_x0, model_device

    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert isinstance(unet, CDM) and unet.encode(x) is x and unet.decode(x) is x
    assert unet.latent_shape == (3, 16, 16) and unet.num_classes == 4 and unet.jacobian_layer == "mid"
    assert unet.jacobian_chunk_size is None and clips_x0(unet, True) and not clips_x0(unet, False)
    assert model_device(unet) == torch.device("cpu")
    assert check_layer_syntax("layer", "block.27") == "block.27"
    from paperlib.canonical import ClaridConfig

    assert ClaridConfig().layer == unet.jacobian_layer  # chapter 3 passes it: the UNets' runs keep their keys
