import torch

from paperlib.checkpoint import flatten_optimizer, strip_prefix, unflatten_optimizer


def test_optimizer_state_round_trips_through_flat_tensors():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    tensors, groups = flatten_optimizer(opt)
    assert set(tensors) == {f"opt.{i}.{k}" for i in (0, 1) for k in ("step", "exp_avg", "exp_avg_sq")}
    other = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1e-2)
    other.load_state_dict(unflatten_optimizer({**tensors, "model.w": torch.zeros(1)}, groups))
    for a, b in zip(opt.state_dict()["state"].values(), other.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_strip_prefix_keeps_only_that_prefix():
    t = {"model.w": torch.ones(1), "ema.w": torch.zeros(1), "modelx": torch.ones(2)}
    assert list(strip_prefix(t, "model.")) == ["w"]
