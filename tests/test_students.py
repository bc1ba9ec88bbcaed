"""The CIFAR ResNet students: architecture, features, normalisation, seeded initialisation."""

import pytest
import torch

from paperlib.students import CifarResNet, Student, StudentConfig, make_student


def test_resnet20_has_the_he_et_al_shape():
    cfg = StudentConfig()
    assert cfg.depth == 20
    model = make_student(cfg, 10, 32)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 19  # 1 stem conv + 3 stages x 3 blocks x 2 convs; + the fc makes 20 weighted layers
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(0.27e6, rel=0.02)
    assert [m.stride for m in model.net.stages.modules() if isinstance(m, torch.nn.Conv2d)
            and m.kernel_size == (1, 1)] == [(2, 2), (2, 2)]  # two projection shortcuts, at the stage changes


@pytest.mark.parametrize("size", [16, 32])
def test_logits_and_pooled_penultimate_features(size):
    model = make_student(StudentConfig(blocks=1, widths=(4, 8, 16)), 10, size).eval()
    x = torch.rand(5, 3, size, size)
    logits, h = model.logits_and_features(x)
    assert logits.shape == (5, 10) and h.shape == (5, 16)
    torch.testing.assert_close(logits, model.net.fc(h))
    torch.testing.assert_close(model(x), logits)
    torch.testing.assert_close(model.features(x), h)
    # h is the spatial mean of the last stage's map of the normalised input
    z = (x - model.mean) / model.std
    fmap = model.net.stages(model.net.act1(model.net.bn1(model.net.conv1(z))))
    torch.testing.assert_close(h, fmap.mean((2, 3)))
    assert (h >= 0).all()  # after the last block's ReLU


def test_initialisation_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = make_student(StudentConfig(), 10, 32, seed=3), make_student(StudentConfig(), 10, 32, seed=3)
    c = make_student(StudentConfig(), 10, 32, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.net.conv1.weight, c.net.conv1.weight)
    # zero_init_last: every residual branch starts as identity (its last BN's weight is 0)
    assert all((blk.bn2.weight == 0).all() for stage in a.net.stages for blk in stage)


def test_config_round_trip_and_bad_input():
    cfg = StudentConfig(blocks=2, widths=(8, 16, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert StudentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="blocks"):
        StudentConfig(blocks=0)
    with pytest.raises(ValueError, match="widths"):
        StudentConfig(widths=(8, 16))
    with pytest.raises(ValueError, match="image_size"):
        make_student(cfg, 10, 30)
    with pytest.raises(ValueError, match="num_classes"):
        make_student(cfg, 1, 32)
    model = make_student(cfg, 10, 32)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        model(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert isinstance(model, Student) and isinstance(model.net, CifarResNet)
