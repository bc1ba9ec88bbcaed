"""CLARID over a dataset: outputs, controls, resumable chunks."""

import pytest
import torch

import paperlib.canonical as canonical
from paperlib.canonical import ClaridConfig, clarid_batch, clarid_dataset, decode_k_sweep
from paperlib.diffusion import alpha_bar, linear_beta_schedule
from paperlib.models import CDMConfig, ClassConditionalUNet

TINY = CDMConfig(sample_size=8, num_classes=3, block_out_channels=(8, 8), attention_levels=(1,), norm_num_groups=4,
                 attention_head_dim=8)
AB = alpha_bar(linear_beta_schedule())
CFG = ClaridConfig(t_star=500, K=5, num_steps=10, cfg_scales=(3.0,), fixed_ks=(2,), method="exact")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ClassConditionalUNet(TINY).eval().requires_grad_(False)


def _images(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(n) % 3


def test_config_validation_and_roundtrip():
    with pytest.raises(ValueError, match="fixed_ks"):
        ClaridConfig(K=4, fixed_ks=(5,))
    with pytest.raises(ValueError, match="K must be"):
        ClaridConfig(K=0)
    assert ClaridConfig.from_dict(CFG.to_dict()) == CFG
    assert CFG.variants() == ["reconstruction", "clarid", "random", "cfg3", "k2"]


def test_clarid_batch_outputs(model):
    images, labels = _images(3)
    out = clarid_batch(model, images, labels, AB, CFG, torch.arange(3))
    assert out["sigma"].shape == (3, 5) and (out["sigma"].diff(dim=1) <= 1e-6).all()
    assert ((out["k_star"] >= 1) & (out["k_star"] <= 5)).all()
    for v in CFG.variants():
        assert out[f"img.{v}"].shape == images.shape and out[f"img.{v}"].dtype == torch.uint8
    # Removing k* directions changes the latent, so CLARID's decode differs from plain reconstruction.
    assert not torch.equal(out["img.clarid"], out["img.reconstruction"])
    # The subspace method agrees with the exact SVD (same spectra, same elbows).
    sub = clarid_batch(model, images, labels, AB, ClaridConfig(**{**CFG.to_dict(), "method": "subspace",
                                                                  "tol": 1e-6, "max_iter": 300}), torch.arange(3))
    torch.testing.assert_close(sub["sigma"], out["sigma"], rtol=1e-3, atol=1e-5)
    assert torch.equal(sub["k_star"], out["k_star"])


def test_decode_k_sweep_k0_is_reconstruction(model):
    images, labels = _images(1)
    out, sigma = decode_k_sweep(model, images[0], int(labels[0]), AB, CFG, [0, 2])
    ref = clarid_batch(model, images, labels, AB, CFG, torch.tensor([0]))
    assert torch.equal(out[0], ref["img.reconstruction"][0])
    assert torch.equal(out[1], ref["img.k2"][0])
    with pytest.raises(ValueError, match="ks must lie"):
        decode_k_sweep(model, images[0], 0, AB, CFG, [6])


def test_clarid_dataset_resumes_from_chunks(model, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    images, labels = _images(6)
    calls = []
    real = canonical.clarid_batch

    def killed_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    idx = torch.tensor([0, 2, 3, 5])
    monkeypatch.setattr(canonical, "clarid_batch", killed_after_one)
    with pytest.raises(KeyboardInterrupt):  # a run killed after its first chunk
        clarid_dataset(model, "m", images, labels, idx, AB, CFG, chunk_size=2, progress=False)
    assert len(list(tmp_path.glob("clarid_run/*.chunks/*.safetensors"))) == 1

    def counting(*args, **kwargs):
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(canonical, "clarid_batch", counting)
    resumed, _ = clarid_dataset(model, "m", images, labels, idx, AB, CFG, chunk_size=2, progress=False)
    assert calls == [2, 2]  # only the missing chunk was computed
    assert torch.equal(resumed["indices"], idx) and torch.equal(resumed["labels"], labels[idx])
    assert not list(tmp_path.glob("clarid_run/*.chunks"))  # merged: chunks removed
    for p in tmp_path.glob("clarid_run/*.safetensors"):
        p.unlink()
    fresh, _ = clarid_dataset(model, "m", images, labels, idx, AB, CFG, chunk_size=2, progress=False)
    assert calls == [2, 2, 2, 2]
    for k in fresh:
        assert torch.equal(fresh[k], resumed[k]) or k == "seconds", k
    with pytest.raises(ValueError, match="indices"):
        clarid_dataset(model, "m", images, labels, torch.tensor([7]), AB, CFG, progress=False)


def test_class_score_jacobian_target(model):
    with pytest.raises(ValueError, match="jacobian must be one of"):
        ClaridConfig(jacobian="logits")
    cfg = ClaridConfig(**{**CFG.to_dict(), "jacobian": "class_score"})
    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    y, t = torch.tensor([1]), torch.tensor([cfg.t_star, cfg.t_star])
    f = canonical.jacobian_target(model, cfg, y)
    torch.testing.assert_close(f(z), model(z, t, y.expand(2)) - model(z, t, torch.full((2,), model.null_class)))
    feature = canonical.jacobian_target(model, CFG, y)
    torch.testing.assert_close(feature(z), model.features(z, t, y.expand(2), "mid"))
    images, labels = _images(2)
    a = clarid_batch(model, images, labels, AB, cfg, torch.arange(2))
    b = clarid_batch(model, images, labels, AB, CFG, torch.arange(2))
    assert a["sigma"].shape == (2, 5) and not torch.allclose(a["sigma"], b["sigma"])


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"t_star": 605}, r"t_star must lie on the 100-step DDIM grid \(multiples of 10 in 10..1000\), got 605"),
        ({"t_star": 5000}, r"t_star must be in 1..1000, got 5000"),
        ({"t_star": 0}, r"t_star must be in 1..1000, got 0"),
        ({"t_star": 600.0}, r"t_star must be an integer, got float 600.0"),
        ({"t_star": 500, "num_steps": 3}, r"num_steps must divide T = 1000"),
        ({"num_steps": 0}, r"num_steps must be >= 1, got 0"),
        ({"layer": "foo"}, r"layer must be a layer name of the form conv_in \| down.\{i\} \| mid \| up.\{i\}.*'foo'"),
        ({"method": "power"}, r"method must be one of"),
        ({"tol": 0.0}, r"tol must be a finite number > 0, got 0.0"),
        ({"max_iter": 0}, r"max_iter must be >= 1"),
        ({"cfg_scales": (float("nan"),)}, r"cfg_scales must hold finite numbers"),
        ({"fixed_ks": (1.5,)}, r"fixed_ks must lie in 1..K"),
    ],
)
def test_config_rejects_bad_fields_at_construction(fields, match):
    with pytest.raises(ValueError, match=match):
        ClaridConfig(**fields)


def test_clarid_batch_rejects_the_null_class_and_bad_inputs(model):
    images, _ = _images(2)
    with pytest.raises(ValueError, match=r"labels must be in 0..2 \(real classes; the null class 3 is not allowed "
                                         r"here\), got \[3\]"):
        clarid_batch(model, images, torch.tensor([0, 3]), AB, CFG, torch.arange(2))
    with pytest.raises(ValueError, match=r"labels must be integer class labels .*\(e.g. 2.7"):
        clarid_batch(model, images, torch.tensor([2.7, 1.0]), AB, CFG, torch.arange(2))
    with pytest.raises(ValueError, match=r"images must hold at least one sample"):
        clarid_batch(model, images[:0], torch.zeros(0, dtype=torch.long), AB, CFG, torch.arange(0))
    with pytest.raises(ValueError, match=r"images must be a torch.uint8 tensor of shape \[B, 3, H, W\], got "
                                         r"torch.float32"):
        clarid_batch(model, images.float(), torch.tensor([0, 1]), AB, CFG, torch.arange(2))
    with pytest.raises(ValueError, match=r"seeds must have an integer dtype"):
        clarid_batch(model, images, torch.tensor([0, 1]), AB, CFG, torch.tensor([0.5, 1.5]))
    # The layer's syntax is checked at construction, its index against the model here.
    deep = ClaridConfig(**{**CFG.to_dict(), "layer": "down.7"})
    with pytest.raises(ValueError, match=r"cfg.layer must be one of this model's layers .*got 'down.7'"):
        clarid_batch(model, images, torch.tensor([0, 1]), AB, deep, torch.arange(2))
    with pytest.raises(ValueError, match=r"labels must be in 0..2"):  # checked before the first chunk runs
        clarid_dataset(model, "m", images, torch.tensor([0, 3]), torch.tensor([0]), AB, CFG, progress=False)
    with pytest.raises(ValueError, match=r"label must be in 0..2 \(real classes; the null class 3"):
        decode_k_sweep(model, images[0], 3, AB, CFG, [0])
    with pytest.raises(ValueError, match=r"label must be an integer, got float 2.7"):
        decode_k_sweep(model, images[0], 2.7, AB, CFG, [0])
    with pytest.raises(ValueError, match=r"ks must lie in 0..K"):
        decode_k_sweep(model, images[0], 0, AB, CFG, [])
