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


def test_run_epochs_checkpoints_every_n_steps_after_epochs_and_when_the_budget_runs_out():
    from paperlib.checkpoint import LoopPosition, run_epochs

    pos, steps, saves, ends = LoopPosition(), [], [], []
    run_epochs(pos, 2, 5, lambda e, s: steps.append((e, s)), lambda e, sec: ends.append(e),
               lambda: saves.append((pos.epoch, pos.step)), RuntimeError, checkpoint_every=3)
    assert steps == [(e, s) for e in range(2) for s in range(5)] and ends == [0, 1]
    assert saves == [(0, 3), (1, 0), (1, 1), (1, 4), (2, 0)]  # global steps 3, 6, 9 and both epoch ends

    class Paused(Exception):
        pass

    pos, saves = LoopPosition(1, 3), []
    try:
        run_epochs(pos, 2, 5, lambda e, s: None, lambda e, sec: None, lambda: saves.append((pos.epoch, pos.step)),
                   Paused, max_seconds=0)
    except Paused as exc:
        assert str(exc) == "at epoch 2/2, step 4/5"
    assert saves == [(1, 4)] and (pos.epoch, pos.step) == (1, 4)
