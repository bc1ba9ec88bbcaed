"""The 2-D proof-of-concept of the paper (§3.3, App. I, Eq. 11, Fig. 5).

Hierarchical generative process (spec §7.2; the constants are ours, the paper's were lost):

1. class ``y ~ Bernoulli(1/2)``; a *core* point on the class segment ``(u, m_y)``, ``u ~ U(-1, 1)``;
2. class-independent variation ``v ~ N(0, sigma_v^2)`` added to ``x2``;
3. ``x1`` shifted by the variation (a shear ``a * v``, or ``a * v^2`` in the nonlinear variant).

So ``x = (u + a s(v), m_y + v)``: every core point of class ``y`` lies on the line ``x2 = m_y``.

The denoiser is the paper's MLP: 3 linear layers, hidden width 80, a sinusoidal time embedding and a
learned label embedding of size 16 each, trained with the DDPM epsilon-loss and label dropout (the null
label ``2``) so that classifier-free guidance is available.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from diffusers.models.embeddings import get_timestep_embedding
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from paperlib.diffusion import alpha_bar as make_alpha_bar
from paperlib.diffusion import linear_beta_schedule, q_sample
from paperlib.progress import tqdm

NULL_CLASS = 2
"""Label of the unconditional branch (classes are 0 and 1)."""


def _c(default, tag: str, note: str):
    return field(default=default, metadata={"tag": tag, "note": note})


@dataclass(frozen=True)
class ToyConfig:
    """Every constant of the toy experiment, each tagged [S] paper, [R] reconstructed or [O] ours (spec §7)."""

    core_levels: tuple[float, float] = _c((-1.0, 1.0), "O", "m_0, m_1: class core lines x2 = m_y")
    core_halfwidth: float = _c(1.0, "O", "core position u ~ U(-h, h)")
    sigma_v: float = _c(0.35, "O", "std of the class-independent variation v")
    shear: float = _c(1.0, "O", "a in x1 = u + a s(v)")
    shift: str = _c("linear", "O", "s(v) = v ('linear') or v^2 ('quadratic')")
    n_data: int = _c(20_000, "O", "training points, balanced classes")
    hidden: int = _c(80, "S", "MLP hidden width")
    emb_dim: int = _c(16, "S", "time and label embedding size")
    T: int = _c(1000, "S", "diffusion steps")
    beta_start: float = _c(1e-4, "R", "linear beta schedule (DDPM)")
    beta_end: float = _c(0.02, "R", "linear beta schedule (DDPM)")
    p_uncond: float = _c(0.1, "O", "label dropout, gives the null branch for CFG")
    steps: int = _c(30_000, "O", "training iterations (the paper's Table 3, lost from our copy)")
    batch_size: int = _c(1024, "O", "minibatch size")
    lr: float = _c(1e-3, "O", "learning rate of Adam (the optimiser is reconstructed from the text), "
                   "cosine decay")
    lr_min: float = _c(1e-5, "O", "final learning rate")
    ema_decay: float = _c(0.999, "O", "EMA of the weights")

    def to_dict(self) -> dict:
        return asdict(self)


def provenance_table(cfg: ToyConfig) -> list[dict]:
    """Rows ``{name, value, tag, note}`` for every field of ``cfg`` (for the book's "what we chose" box)."""
    return [
        {"name": f.name, "value": getattr(cfg, f.name), "tag": f.metadata["tag"], "note": f.metadata["note"]}
        for f in fields(cfg)
    ]


def _shift(v: Tensor, cfg: ToyConfig) -> Tensor:
    if cfg.shift == "linear":
        return v
    if cfg.shift == "quadratic":
        return v**2
    raise ValueError(f"shift must be 'linear' or 'quadratic', got {cfg.shift!r}")


def sample_toy(n: int, generator: torch.Generator | int, cfg: ToyConfig = ToyConfig(), y: int | None = None):
    """Draw ``n`` points from the hierarchical process (Eq. 11, our constants).

    Args:
        n: Number of points.
        generator: Seed or ``torch.Generator``.
        cfg: Process constants.
        y: Draw only this class (``0`` or ``1``); ``None``: a balanced mix.

    Returns:
        ``(x, y)``: ``x`` of shape ``[n, 2]`` (float32), ``y`` of shape ``[n]`` (int64).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if y is not None and y not in (0, 1):
        raise ValueError(f"y must be 0, 1 or None, got {y}")
    g = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    labels = torch.full((n,), y, dtype=torch.long) if y is not None else torch.arange(n) % 2
    labels = labels[torch.randperm(n, generator=g)]
    u = (torch.rand(n, generator=g) * 2 - 1) * cfg.core_halfwidth
    v = torch.randn(n, generator=g) * cfg.sigma_v
    m = torch.tensor(cfg.core_levels)[labels]
    x = torch.stack([u + cfg.shear * _shift(v, cfg), m + v], dim=1)
    return x.float(), labels


def toy_log_density(x: Tensor, y: Tensor | int | None, cfg: ToyConfig = ToyConfig()) -> Tensor:
    """Exact log-density ``log p(x | y)`` of the process (``-inf`` off the support).

    Args:
        x: ``[N, 2]`` points.
        y: ``[N]`` labels or one label; ``None``: the balanced two-class mixture ``log p(x)``.
        cfg: Process constants.

    Returns:
        ``[N]`` log-densities.
    """
    if y is None:
        both = torch.stack([toy_log_density(x, c, cfg) for c in (0, 1)])
        return torch.logsumexp(both, 0) - math.log(2)
    y = torch.as_tensor(y).long().expand(x.shape[0])
    if ((y < 0) | (y > 1)).any():
        raise ValueError("y must contain only classes 0 and 1")
    v = x[:, 1].double() - torch.tensor(cfg.core_levels, dtype=torch.float64)[y]
    u = x[:, 0].double() - cfg.shear * _shift(v, cfg)
    log_v = -0.5 * (v / cfg.sigma_v) ** 2 - math.log(cfg.sigma_v * math.sqrt(2 * math.pi))
    inside = u.abs() <= cfg.core_halfwidth
    log_u = torch.where(inside, torch.full_like(u, -math.log(2 * cfg.core_halfwidth)), torch.full_like(u, -math.inf))
    return log_v + log_u


def distance_to_core(x: Tensor, y: int, cfg: ToyConfig = ToyConfig()) -> Tensor:
    """``|x2 - m_y|``: distance of points to the core line of class ``y`` (``[N, 2] -> [N]``)."""
    if y not in (0, 1):
        raise ValueError(f"y must be 0 or 1, got {y}")
    return (x[:, 1] - cfg.core_levels[y]).abs()


class ToyDenoiser(nn.Module):
    """The paper's toy noise predictor ``eps_theta(x_t, t, y)`` (App. I).

    ``[x_t (2) | sinusoidal emb(t) (16) | emb(y) (16)] -> Linear(34, 80) - SiLU - Linear(80, 80) - SiLU
    - Linear(80, 2)``. Labels ``0, 1`` and the null label ``2``.
    """

    def __init__(self, hidden: int = 80, emb_dim: int = 16, num_classes: int = 2):
        super().__init__()
        self.emb_dim = emb_dim
        self.num_classes = num_classes
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim)
        self.hidden1 = nn.Sequential(nn.Linear(2 + 2 * emb_dim, hidden), nn.SiLU())
        self.hidden2 = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU())
        self.out = nn.Linear(hidden, 2)

    def _check(self, x: Tensor, t: Tensor, y: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"x must have shape [B, 2], got {tuple(x.shape)}")
        if t.shape != (x.shape[0],) or y.shape != (x.shape[0],):
            raise ValueError(f"t and y must have shape [B] = [{x.shape[0]}]")
        if ((y < 0) | (y > self.num_classes)).any():
            raise ValueError(f"class ids must be in 0..{self.num_classes} ({self.num_classes} = null)")

    def features(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """The 80-d second hidden layer ``f_{l,t}(x_t, y)`` used for the Jacobian ([O] layer choice).

        Args:
            x: ``[B, 2]`` noisy points.
            t: ``[B]`` integer times.
            y: ``[B]`` labels (``2`` = null).

        Returns:
            ``[B, hidden]`` activations.
        """
        self._check(x, t, y)
        t_emb = get_timestep_embedding(t, self.emb_dim).to(x.dtype)
        h = torch.cat([x, t_emb, self.label_emb(y)], dim=1)
        return self.hidden2(self.hidden1(h))

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Predict the noise ``eps`` (``[B, 2]``)."""
        return self.out(self.features(x, t, y))


def toy_alpha_bar(cfg: ToyConfig = ToyConfig()) -> Tensor:
    """The toy's ``[T + 1]`` schedule."""
    return make_alpha_bar(linear_beta_schedule(cfg.T, cfg.beta_start, cfg.beta_end))


def train_toy_denoiser(cfg: ToyConfig = ToyConfig(), seed: int = 0, progress: bool = True):
    """Train :class:`ToyDenoiser` with the DDPM epsilon-loss (Ho et al. 2020) and label dropout.

    ``L = E_{x0, y, t, eps} || eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t, y') ||^2`` with
    ``t ~ U{1..T}`` and ``y' = null`` with probability ``p_uncond``. Adam, cosine learning-rate decay,
    EMA of the weights.

    Args:
        cfg: Data, model and optimisation constants.
        seed: Seeds the data draw, the initialisation and every minibatch.
        progress: Show a tqdm bar with the running loss.

    Returns:
        ``(model, losses, seconds)``: the EMA model in eval mode, the per-step losses ``[steps]``
        (numpy), and the wall time.
    """
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {cfg.steps}, {cfg.batch_size}")
    g = torch.Generator().manual_seed(seed)
    x_data, y_data = sample_toy(cfg.n_data, g, cfg)
    with torch.random.fork_rng(devices=[]):  # nn.Module init draws from the global generator
        torch.manual_seed(seed)
        model = ToyDenoiser(cfg.hidden, cfg.emb_dim)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr_min)
    ab = toy_alpha_bar(cfg).float()
    losses = np.empty(cfg.steps, dtype=np.float32)
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="toy DDPM training", disable=not progress, mininterval=1.0)
    for step in bar:
        idx = torch.randint(0, cfg.n_data, (cfg.batch_size,), generator=g)
        x0, y = x_data[idx], y_data[idx]
        y = torch.where(torch.rand(cfg.batch_size, generator=g) < cfg.p_uncond, NULL_CLASS, y)
        t = torch.randint(1, cfg.T + 1, (cfg.batch_size,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        loss = (model(q_sample(x0, t, eps, ab), t, y) - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(model)
        losses[step] = loss.item()
        if step % 500 == 0:
            bar.set_postfix(loss=f"{losses[max(0, step - 499): step + 1].mean():.4f}")
    trained = ema.module.eval()
    for p in trained.parameters():
        p.requires_grad_(False)
    return trained, losses, time.perf_counter() - start


def load_or_train_toy(cfg: ToyConfig, seed: int, publish: bool = False, progress: bool = True):
    """The trained toy denoiser for ``(cfg, seed)``: loaded from the artifacts/cache, else trained and saved.

    Returns:
        ``(model, losses, manifest)``: EMA model (eval, frozen), per-step losses ``[steps]``, and the
        artifact manifest (config, wall time, sha256).
    """
    from paperlib.cache import load_or_compute

    def compute() -> dict[str, Tensor]:
        model, losses, _ = train_toy_denoiser(cfg, seed, progress)
        return {**{f"model.{k}": v for k, v in model.state_dict().items()}, "losses": torch.from_numpy(losses)}

    tensors, manifest = load_or_compute("toy_model", {**cfg.to_dict(), "seed": seed}, compute, publish=publish)
    with torch.random.fork_rng(devices=[]):
        model = ToyDenoiser(cfg.hidden, cfg.emb_dim)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    model.eval().requires_grad_(False)
    return model, tensors["losses"].numpy(), manifest


def compare_methods(
    model: ToyDenoiser,
    x: Tensor,
    y: int,
    t_star: int,
    cfg_scales: tuple[float, ...] = (2.0, 3.0, 5.0),
    num_steps: int = 100,
    generator: torch.Generator | int = 0,
    cfg: ToyConfig = ToyConfig(),
) -> dict[str, Tensor]:
    """Decode the same inverted latents ``x_{t*}`` in every way Fig. 5 compares.

    - ``original``: the input points; ``reconstruction``: invert -> decode, no projection, no guidance;
    - ``CFG w``: the same ``x_{t*}`` decoded with classifier-free guidance ``w`` (the paper's baseline);
    - ``CLARID``: ``k* = 1`` of ``K = 2`` Jacobian directions projected out, decoded without guidance;
    - ``random direction``: a control projecting out one uniformly random unit direction per point.

    Args:
        model: Trained :class:`ToyDenoiser`.
        x: ``[N, 2]`` points of class ``y``.
        y: Their class.
        t_star: Inversion time.
        cfg_scales: CFG scales of the baseline.
        num_steps: DDIM steps over ``[0, T]``.
        generator: Seed or generator of the random-direction control.
        cfg: Toy constants (for the schedule).

    Returns:
        Ordered ``{method: [N, 2] outputs}``.
    """
    from paperlib.clarid import clarid, project_out
    from paperlib.diffusion import ddim_decode

    ab = toy_alpha_bar(cfg)
    labels = torch.full((x.shape[0],), y, dtype=torch.long)
    res = clarid(model, model.features, x, labels, ab, t_star, K=2, method="exact", num_steps=num_steps,
                 progress=False)
    x_t = res.x_t_star

    def dec(z: Tensor, w: float = 1.0) -> Tensor:
        return ddim_decode(model, z, labels, ab, t_star, 0, num_steps, w, NULL_CLASS)

    g = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    rand_dir = torch.nn.functional.normalize(torch.randn(x.shape[0], 2, 1, generator=g), dim=1)
    out = {"original": x, "reconstruction": dec(x_t)}
    out.update({f"CFG w={w:g}": dec(x_t, w) for w in cfg_scales})
    out["CLARID"] = res.canonical
    out["random direction"] = dec(project_out(x_t, rand_dir))
    return out


def summarize_outputs(outputs: dict[str, Tensor], y: int = 1, cfg: ToyConfig = ToyConfig(),
                      near: float = 0.1) -> dict[str, dict[str, float]]:
    """Per method: median distance to the class-``y`` core line, fraction within ``near`` of it, the spread
    along ``x1`` (a line, not a point), and the median distance to the other class's core line."""
    other = 1 - y
    return {
        name: {
            "median_dist_core": float(distance_to_core(z, y, cfg).median()),
            "frac_near_core": float((distance_to_core(z, y, cfg) < near).float().mean()),
            "std_x1": float(z[:, 0].std()),
            "median_dist_other": float(distance_to_core(z, other, cfg).median()),
        }
        for name, z in outputs.items()
    }


SWEEP_METRICS = ("median_dist_core", "frac_near_core", "std_x1", "median_dist_other")
"""The numbers :func:`summarize_outputs` gives per method, in the order :func:`t_star_sweep` stores them."""


def t_star_sweep(
    models: dict[int, ToyDenoiser],
    model_keys: dict[int, str],
    t_stars: list[int],
    n_points: int,
    num_steps: int = 100,
    cfg_scales: tuple[float, ...] = (3.0,),
    cfg: ToyConfig = ToyConfig(),
    keep_seed: int | None = None,
    publish: bool = False,
) -> tuple[dict[int, dict[int, dict[str, dict[str, float]]]], dict[int, Tensor]]:
    """:func:`compare_methods` over inversion times and training seeds, summarised, and cached.

    For each ``t*`` and seed ``s``: ``n_points`` class-1 points drawn with seed ``1000 + s``, decoded every
    way (random-direction control seeded by ``s``), summarised by :func:`summarize_outputs`. The summaries
    and the CLARID outputs of ``keep_seed`` are one small artifact (stage ``toy_sweep``) keyed by the
    trained models' keys, so a rebuild of the book reads them instead of rerunning about a hundred seconds
    of DDIM.

    Args:
        models: ``seed -> trained denoiser``.
        model_keys: ``seed -> the key of its artifact`` (its manifest's ``key``).
        t_stars: Inversion times.
        n_points: Class-1 points per seed.
        num_steps: DDIM steps over ``[0, T]``.
        cfg_scales: CFG scales of the baseline.
        cfg: Toy constants.
        keep_seed: Seed whose CLARID outputs are returned for plotting (default: the first).
        publish: Save into the committed ``artifacts/``.

    Returns:
        ``(summaries, clarid)``: ``summaries[t][seed][method][metric]`` as :func:`summarize_outputs`, and
        ``clarid[t]``, the ``[n_points, 2]`` CLARID outputs of ``keep_seed`` at ``t``.

    Raises:
        ValueError: if ``models`` and ``model_keys`` name different seeds, or a list is empty.
    """
    from paperlib.cache import load_or_compute

    seeds = sorted(models)
    if not seeds or sorted(model_keys) != seeds or not t_stars:
        raise ValueError(f"need models and model_keys for the same seeds and some t*, got {sorted(models)}, "
                         f"{sorted(model_keys)}, {t_stars}")
    keep = seeds[0] if keep_seed is None else keep_seed
    methods = ["original", "reconstruction", *[f"CFG w={w:g}" for w in cfg_scales], "CLARID", "random direction"]

    def compute() -> dict[str, Tensor]:
        stats = torch.zeros(len(t_stars), len(seeds), len(methods), len(SWEEP_METRICS), dtype=torch.float64)
        kept = torch.zeros(len(t_stars), n_points, 2)
        for i, t in enumerate(t_stars):
            for j, s in enumerate(seeds):
                x1, _ = sample_toy(n_points, 1000 + s, cfg, y=1)
                out = compare_methods(models[s], x1, 1, t, cfg_scales, num_steps, generator=s, cfg=cfg)
                summary = summarize_outputs(out, 1, cfg)
                stats[i, j] = torch.tensor([[summary[m][k] for k in SWEEP_METRICS] for m in methods])
                if s == keep:
                    kept[i] = out["CLARID"]
        return {"stats": stats, "clarid": kept}

    config = {"models": [model_keys[s] for s in seeds], "seeds": seeds, "t_stars": list(t_stars),
              "n_points": n_points, "num_steps": num_steps, "cfg_scales": list(cfg_scales), "keep_seed": keep,
              "methods": methods}
    tensors, _ = load_or_compute("toy_sweep", config, compute, publish=publish)
    summaries = {t: {s: {m: dict(zip(SWEEP_METRICS, tensors["stats"][i, j, k].tolist()))
                         for k, m in enumerate(methods)}
                     for j, s in enumerate(seeds)}
                 for i, t in enumerate(t_stars)}
    return summaries, {t: tensors["clarid"][i] for i, t in enumerate(t_stars)}


def top_direction_stats(model: ToyDenoiser, x: Tensor, y: int, t_star: int, num_steps: int = 100,
                        cfg: ToyConfig = ToyConfig()) -> dict[str, float]:
    """Where the top extraneous direction points, and how dominant it is, over a set of points.

    Args:
        model: Trained :class:`ToyDenoiser`.
        x: ``[N, 2]`` points of class ``y``.
        y: Their class.
        t_star: Inversion time.
        num_steps: DDIM steps over ``[0, T]``.
        cfg: Toy constants.

    Returns:
        ``{"angle": median angle of v_1 in degrees within [0, 180) (90 = the x2 axis), "angle_iqr": its
        interquartile range, "ratio": median sigma_1 / sigma_2}``.
    """
    from paperlib.clarid import clarid

    labels = torch.full((x.shape[0],), y, dtype=torch.long)
    res = clarid(model, model.features, x, labels, toy_alpha_bar(cfg), t_star, K=2, method="exact",
                 num_steps=num_steps, progress=False, keep_directions=True)
    v = res.directions[:, :, 0]
    angle = torch.rad2deg(torch.atan2(v[:, 1], v[:, 0])) % 180
    return {"angle": float(angle.median()), "angle_iqr": float(angle.quantile(0.75) - angle.quantile(0.25)),
            "ratio": float((res.sigma[:, 0] / res.sigma[:, 1]).median())}
