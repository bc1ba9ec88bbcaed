"""LatentDiT on tiny random models (as diffusers' own tests: sample_size 8, 2 layers, patch 2, a 2-block VAE),
saved with save_pretrained and loaded back through the from_pretrained path a user takes. Nothing downloads."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, DiTTransformer2DModel

from paperlib.canonical import ClaridConfig, clarid_batch, jacobian_target
from paperlib.clarid import extraneous_directions, jacobian, project_out
from paperlib.data import from_model_range, to_model_range
from paperlib.diffusion import alpha_bar, ddim_decode, ddim_invert, guided_eps, linear_beta_schedule
from paperlib.dit import DIT_XL_2_256, LATENT_SCALE, LatentDiT, load_book_dit
from paperlib.features import layer_time_features
from paperlib.models import CDM, clips_x0
from paperlib.selection import two_stage_predictions

AB = alpha_bar(linear_beta_schedule())
N_CLASSES = 10  # the tiny DiT's num_embeds_ada_norm: its null id is 10, not ImageNet's 1000
CLASSES = (7, 2, 5)  # transformer ids of the book's labels 0, 1, 2


def tiny_transformer(out_channels: int = 8, seed: int = 0) -> DiTTransformer2DModel:
    torch.manual_seed(seed)
    return DiTTransformer2DModel(sample_size=8, num_layers=2, patch_size=2, in_channels=4, out_channels=out_channels,
                                 num_attention_heads=2, attention_head_dim=8, num_embeds_ada_norm=N_CLASSES)


def tiny_vae(seed: int = 1) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)


def save_tiny(folder, out_channels: int = 8):
    tiny_transformer(out_channels).save_pretrained(folder / "transformer")
    tiny_vae().save_pretrained(folder / "vae")
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("dit"))


@pytest.fixture(scope="module")
def dit(folder):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return LatentDiT.from_pretrained(str(folder), CLASSES, local_files_only=True)


def _images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)


def test_loaded_from_a_saved_folder_is_the_saved_model(dit, folder):
    assert isinstance(dit, CDM) and not dit.training
    ref = tiny_transformer()
    for name, p in ref.state_dict().items():
        torch.testing.assert_close(dit.transformer.state_dict()[name], p, rtol=0, atol=0)
    assert dit.latent_shape == (4, 8, 8) and dit.image_size == 16
    assert dit.num_classes == 3 and dit.null_class == 3 and dit.dit_null_class == N_CLASSES
    assert dit.layer_names() == ["block.0", "block.1"] and dit.jacobian_layer == "block.1"
    assert dit.scale == LATENT_SCALE and dit.learned_sigma and dit.data_range is None
    assert not clips_x0(dit, True)  # latents are never clamped
    assert DIT_XL_2_256 == "facebook/DiT-XL-2-256"


def _raw(dit, x, t_index, dit_label):
    n = len(x)
    return dit.transformer(x, timestep=torch.full((n,), t_index), class_labels=torch.full((n,), dit_label)).sample


@torch.no_grad()
def test_eps_is_the_first_half_of_the_learned_sigma_head_and_labels_map_to_dit_ids(dit):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    raw = _raw(dit, x, 499, CLASSES[1])
    assert raw.shape == (2, 8, 8, 8)
    torch.testing.assert_close(dit(x, 500, 1), raw[:, :4], rtol=0, atol=0)  # book time t = DiT index t - 1
    torch.testing.assert_close(dit(x, 500, dit.null_class), _raw(dit, x, 499, N_CLASSES)[:, :4], rtol=0, atol=0)
    torch.testing.assert_close(dit(x, 0, 0), _raw(dit, x, 0, CLASSES[0])[:, :4], rtol=0, atol=0)  # t = 0: index 0
    torch.testing.assert_close(dit(x, 1000, 2), _raw(dit, x, 999, CLASSES[2])[:, :4], rtol=0, atol=0)
    assert not torch.allclose(dit(x, 500, 0), dit(x, 500, 1))


@torch.no_grad()
def test_a_plain_eps_head_and_the_transformers_own_labels(tmp_path):
    plain = LatentDiT(tiny_transformer(out_channels=4), tiny_vae())
    assert not plain.learned_sigma and plain.num_classes == N_CLASSES and plain.null_class == N_CLASSES
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(plain(x, 300, 4), _raw(plain, x, 299, 4), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"outputs 6 channels; expected 4 \(eps\) or 8"):
        LatentDiT(tiny_transformer(out_channels=6), tiny_vae())


@torch.no_grad()
def test_cfg_equals_the_formula(dit):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    y, w = torch.tensor([0, 2]), 3.0
    e_c = torch.stack([_raw(dit, x[i : i + 1], 399, CLASSES[int(c)])[0, :4] for i, c in enumerate(y)])
    e_u = _raw(dit, x, 399, N_CLASSES)[:, :4]
    torch.testing.assert_close(guided_eps(dit, x, 400, y, w, dit.null_class), e_u + w * (e_c - e_u),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(guided_eps(dit, x, 400, y), e_c, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_features_are_the_block_outputs_seen_by_a_forward_hook(dit):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    t, y = torch.tensor([100, 700]), torch.tensor([1, dit.null_class])
    seen = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(f"block.{k}", o))
             for k, b in enumerate(dit.transformer.transformer_blocks)]
    try:
        dit(x, t, y)
    finally:
        for h in hooks:
            h.remove()
    assert set(seen) == set(dit.layer_names())
    for layer in dit.layer_names():
        f = dit.features(x, t, y, layer)
        assert f.shape == (2, 16, 16)  # 4x4 tokens of width 16
        torch.testing.assert_close(f, seen[layer], rtol=0, atol=0)
        torch.testing.assert_close(dit.pooled_features(x, t, y, layer), seen[layer].mean(1), rtol=0, atol=0)
    many = dit.pooled_features_many(x, t, y, ["block.1", "block.0"])
    assert list(many) == ["block.1", "block.0"]
    for layer, v in many.items():
        torch.testing.assert_close(v, seen[layer].mean(1), rtol=0, atol=0)
    torch.testing.assert_close(dit.features(x, t, y), seen["block.1"], rtol=0, atol=0)  # default: the last block


@torch.no_grad()
def test_encode_decode_are_the_scaled_vae(dit):
    x = to_model_range(_images(3))
    z = dit.encode(x)
    torch.testing.assert_close(z, dit.vae.encode(x).latent_dist.mean * LATENT_SCALE, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dit.decode(z), dit.vae.decode(z / LATENT_SCALE).sample, rtol=1e-5, atol=1e-6)
    one_by_one = LatentDiT(dit.transformer, dit.vae, CLASSES, vae_batch_size=1)
    torch.testing.assert_close(one_by_one.encode(x), z, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        dit.encode(x * 2)
    with pytest.raises(ValueError, match=r"images must be \[B, 3, 16, 16\]"):
        dit.encode(x[:, :, :8, :8])


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_jacobian_forward_mode_matches_reverse_mode_through_attention(dit):
    z = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(6))
    f = jacobian_target(dit, ClaridConfig(t_star=600, K=4, layer="block.1"), torch.tensor([1]))
    J = jacobian(f, z)  # forward mode (JVPs), the path CLARID takes
    J_rev = torch.func.jacrev(lambda q: f(q[None])[0].reshape(-1))(z).reshape(J.shape)
    assert J.shape == (16 * 16, 4 * 8 * 8)
    torch.testing.assert_close(J, J_rev, rtol=1e-4, atol=1e-5)


def test_krylov_directions_match_the_exact_svd(dit):
    x0 = dit.encode(to_model_range(_images(1, seed=2)))
    y = torch.tensor([2])
    x_t = ddim_invert(dit, x0, y, AB, 600, num_steps=10)[0]
    f = jacobian_target(dit, ClaridConfig(t_star=600, K=5, layer=dit.jacobian_layer), y)
    _, S, Vh = torch.linalg.svd(jacobian(f, x_t), full_matrices=False)
    V, sigma = extraneous_directions(f, x_t, 5, "krylov", tol=1e-6, generator=0)
    torch.testing.assert_close(sigma, S[:5], rtol=1e-4, atol=1e-6)
    # the top-3 subspace (a clear gap below it in this model) and each direction up to sign
    angle = torch.linalg.matrix_norm(V[:, :3] - Vh[:3].T @ (Vh[:3] @ V[:, :3]), ord=2)
    assert angle < 1e-3
    assert (V[:, 0] @ Vh[0]).abs() > 0.999


def test_clarid_end_to_end_on_the_latent_dit(dit):
    images, labels = _images(2, seed=7), torch.tensor([0, 2])
    cfg = ClaridConfig(t_star=600, K=4, num_steps=10, cfg_scales=(3.0,), fixed_ks=(2,), layer=dit.jacobian_layer,
                       max_iter=4)
    out = clarid_batch(dit, images, labels, AB, cfg, torch.tensor([5, 9]))
    assert out["clarep"].shape == (2, 4, 8, 8) and out["sigma"].shape == (2, 4)
    assert all(out[f"img.{v}"].shape == (2, 3, 16, 16) and out[f"img.{v}"].dtype == torch.uint8
               for v in cfg.variants())
    # the same steps by hand: VAE encode, invert, Krylov directions, project, decode (no clamping), VAE decode
    x_t = ddim_invert(dit, dit.encode(to_model_range(images)), labels, AB, 600, num_steps=10)
    for i, seed in enumerate([5, 9]):
        f = jacobian_target(dit, cfg, labels[i : i + 1])
        V, sigma = extraneous_directions(f, x_t[i], 4, "krylov", tol=cfg.tol, max_iter=cfg.max_iter,
                                         chunk_size=dit.jacobian_chunk_size, generator=seed)
        torch.testing.assert_close(out["sigma"][i], sigma, rtol=1e-5, atol=1e-6)
        clarep = project_out(x_t[i], V[:, : int(out["k_star"][i])])
        torch.testing.assert_close(out["clarep"][i].float(), clarep, rtol=2e-3, atol=2e-3)  # stored as float16
    rec = from_model_range(dit.decode(ddim_decode(dit, x_t, labels, AB, 600, 0, 10)))
    assert (rec.int() - out["img.reconstruction"].int()).abs().max() <= 1
    assert not torch.equal(out["img.clarid"], out["img.cfg3"])


def test_layer_time_features_encode_then_invert(dit):
    images, labels = _images(2, seed=8), torch.tensor([1, dit.null_class])
    feats = layer_time_features(dit, images, labels, AB, [0, 300], dit.layer_names(), num_steps=10, progress=False)
    x0 = dit.encode(to_model_range(images))
    _, traj = ddim_invert(dit, x0, labels, AB, 300, num_steps=10, return_trajectory=True)
    for t in (0, 300):
        for layer in dit.layer_names():
            ref = dit.pooled_features(traj[t], torch.full((2,), t), labels, layer)
            torch.testing.assert_close(feats[(layer, t)], ref, rtol=1e-5, atol=1e-6)


def test_two_stage_samples_are_decoded_latents_from_cpu_seeded_noise(dit):
    from paperlib.classifiers import make_classifier
    from paperlib.diffusion import two_stage_sample

    clf = {"resnet": make_classifier("resnet", 3, 16)}
    samples, preds = two_stage_predictions(dit, clf, AB, 500, 2, num_steps=10, seed=1)
    assert samples.shape == (6, 3, 16, 16) and preds["resnet"].shape == (6,)
    y = torch.arange(3).repeat_interleave(2)
    z = two_stage_sample(dit, (6, 4, 8, 8), y, AB, 500, dit.null_class, generator=1 * 100_003, num_steps=10)
    assert torch.equal(samples, from_model_range(dit.decode(z)))


def test_noise_is_drawn_on_the_cpu_then_moved():
    from paperlib.diffusion import _noise

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ref = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    for device in devices:
        x = _noise((2, 4, 8, 8), 11, device)
        assert x.device.type == device and torch.equal(x.cpu(), ref)


def test_bad_inputs(dit, tmp_path):
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"x_t must be \[B, 4, 8, 8\]"):
        dit(torch.randn(1, 4, 4, 4), 10, 0)
    with pytest.raises(ValueError, match=r"t must be in 0..T = 0..1000"):
        dit(x, 1001, 0)
    with pytest.raises(ValueError, match="y must"):
        dit(x, 10, 4)  # 3 classes + null
    with pytest.raises(ValueError, match="layer must be one of block.0..block.1"):
        dit.features(x, 10, 0, "mid")
    with pytest.raises(ValueError, match="classes must be distinct transformer class ids in 0..9"):
        LatentDiT(dit.transformer, dit.vae, classes=[1, 10])
    with pytest.raises(ValueError, match="the transformer takes 4 channels, the VAE makes 8"):
        LatentDiT(dit.transformer, AutoencoderKL(block_out_channels=[32], latent_channels=8))
    folder = save_tiny(tmp_path / "other")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}))
    with pytest.raises(ValueError, match="paperlib assumes the DiT's"):
        LatentDiT.from_pretrained(str(folder), local_files_only=True)


def test_load_book_dit_from_a_local_folder_and_fake_imagenet(fake_imagenet, tmp_path, monkeypatch):
    from dataclasses import replace

    from paperlib.dit import book_dit_recipe

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PAPERLIB_IMAGENET", str(fake_imagenet(per_class=2)))
    torch.manual_seed(0)  # an ImageNet-sized label table (1000 classes + null), tiny otherwise
    folder = tmp_path / "dit1000"
    DiTTransformer2DModel(sample_size=8, num_layers=2, patch_size=2, in_channels=4, out_channels=8,
                          num_attention_heads=2, attention_head_dim=8).save_pretrained(folder / "transformer")
    tiny_vae().save_pretrained(folder / "vae")
    data = replace(book_dit_recipe("paper").data, size=16, n_train=20, n_test=20)
    cdm = load_book_dit("paper", source=str(folder), data=data)
    assert cdm.model.null_class == 20 and cdm.model.dit_null_class == 1000
    assert cdm.images.shape == (20, 3, 16, 16) and cdm.classes[0] == "robin" and len(cdm.losses()) == 0
    assert cdm.model.num_classes == 20 and cdm.model.label_map[:3].tolist() == [15, 95, 146]
    assert len(cdm.alpha_bar) == 1001 and torch.equal(cdm.alpha_bar, AB)
    from paperlib.plotting import loss_curves

    loss_curves({"imagenet20": cdm.losses(), "shapes": torch.rand(50).numpy()})  # no history: left out
    again = load_book_dit("paper", source=str(folder), data=data)
    assert again.manifest["key"] == cdm.manifest["key"]
    with pytest.raises(ValueError, match="profile 'paper'"):
        book_dit_recipe("full")
