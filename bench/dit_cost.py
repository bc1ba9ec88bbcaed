"""What the paper-scale chapters (DiT-XL/2 on ImageNet20, profile ``paper``) should cost on a GPU: an estimate.

Nothing here runs DiT-XL/2 (it does not fit this CPU's budget); the estimate is built in four steps:

1. **FLOPs per unit of work, exact**: counted with ``torch.utils.flop_counter`` on models built on the ``meta``
   device (no memory, no weights, nothing downloaded): DiT-XL/2 256 (eps forward, features to block 27, JVP
   per tangent, VJP per cotangent), the SD VAE at 256 px (encode, decode) and the three timm classifiers.
2. **CPU timings** (this machine, 1 thread, CPU seconds: less sensitive to the shared cores than wall time)
   of the same units on random DiTs at the paper's latent geometry (``4 x 32 x 32``, patch 2, 256 tokens):
   ``tiny``, ``small`` and ``S/2`` (DiT-S/2's width and depth). They give the achieved GFLOP/s per unit (is
   time proportional to the FLOPs counted?) and, from one full CLARID per image at the paper profile's
   settings on ``tiny`` and ``small`` (Krylov, K from the profile), the share of CLARID's time spent outside
   the network passes (Krylov's linear algebra, projections, DDIM arithmetic).
3. **Work per chapter**, counted by running the chapters' own ``paperlib`` functions on a tiny DiT for one
   image or sample (every network entry is counted by batch size and mode: eps, features, JVP, VJP, VAE),
   scaled to the paper profile's image counts. Krylov's steps depend on the spectrum of the real model: the
   count uses the median of the book's CIFAR-10 run at the same K (10 steps; the random DiTs' own are
   reported beside it). The times the chapters choose (t*, t_f) are not known before they run: assumed below.
4. **GPU hours** = FLOPs / an assumed achieved throughput, times ``1 + overhead`` from step 2.

    python bench/dit_cost.py [--out bench/dit_cost.json] [--repeats 3] [--gpu-tflops 10]

Assumption of step 4: an A100 in float32 (PyTorch's default, no TF32 matmuls) peaks at 19.5 TFLOP/s; we
assume half of it is achieved (10 TFLOP/s). A faster GPU, TF32 or bf16 scale the hours down accordingly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path
from statistics import median

import torch
from diffusers import AutoencoderKL, DiTTransformer2DModel
from torch.utils.flop_counter import FlopCounterMode

import paperlib.clarid as clarid_mod
from paperlib.clarid import autodiff_safe_attention
from paperlib.dit import LatentDiT

ROOT = Path(__file__).resolve().parent.parent
XL = {"num_attention_heads": 16, "attention_head_dim": 72, "num_layers": 28}  # DiT-XL/2 (the hub config)
CPU_MODELS = {  # random DiTs at the paper's latent geometry
    "tiny": {"num_attention_heads": 2, "attention_head_dim": 32, "num_layers": 2},
    "small": {"num_attention_heads": 4, "attention_head_dim": 32, "num_layers": 4},
    "S/2": {"num_attention_heads": 6, "attention_head_dim": 64, "num_layers": 12},
}
SD_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
TINY_VAE_256 = {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1,  # 8x down: 256 px -> 32
                "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
KRYLOV_STEPS = 10
KRYLOV_SOURCE = ("median Krylov steps of the book's 1000-image CIFAR-10 CLARID run at K = 20 (chapter 3, "
                 "artifacts/clarid_run/03def1f3dd000492; the shapes run: 8)")
"""Krylov steps per image assumed at K = 20 (the real DiT's spectrum decides; see KRYLOV_SOURCE)."""
ASSUMED = {"t_star": 600, "t_f": 300, "t_f_null": 300}
"""Times the chapters choose at run time (chapter 2: t*; chapter 4: t_f under the class and the null class)."""


def dit(cfg: dict, classes: int = 1000, sample_size: int = 32) -> DiTTransformer2DModel:
    return DiTTransformer2DModel(in_channels=4, out_channels=8, sample_size=sample_size, patch_size=2,
                                 num_embeds_ada_norm=classes, **cfg)


# --- 1. FLOPs on the meta device ---------------------------------------------------------------------------


def _flops(fn) -> float:
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def unit_flops(transformer: DiTTransformer2DModel, device: str = "meta") -> dict[str, float]:
    """FLOPs per sample of each unit of DiT work (``eps``, ``features`` to the last block, and their JVP per
    tangent and VJP per cotangent)."""
    x = torch.randn(1, 4, 32, 32, device=device)
    t, y = torch.tensor([500], device=device), torch.tensor([3], device=device)
    last = len(transformer.transformer_blocks) - 1

    def eps(z):
        return transformer(z, timestep=t, class_labels=y).sample[:, :4]

    def features(z):
        h = transformer.pos_embed(z)
        for block in transformer.transformer_blocks[: last + 1]:
            h = block(h, timestep=t, class_labels=y)
        return h

    out = {}
    with autodiff_safe_attention():
        for name, f in (("eps", eps), ("features", features)):
            out[name] = _flops(lambda f=f: f(x))
            out[f"jvp.{name}"] = _flops(lambda f=f: torch.func.jvp(f, (x,), (torch.randn_like(x),)))

            def vjp(f=f):
                z = x.clone().requires_grad_(True)
                v = f(z)
                v.backward(torch.randn_like(v))

            out[f"vjp.{name}"] = _flops(vjp)
    return out


def meta_flops() -> dict:
    """FLOPs of DiT-XL/2, the SD VAE and the classifiers, per sample (meta device: nothing allocated)."""
    import timm

    from paperlib.classifiers import PRETRAINED_IMAGENET

    with torch.device("meta"):
        xl = dit(XL).requires_grad_(False)
        vae = AutoencoderKL(latent_channels=4, **SD_VAE).requires_grad_(False)
    out = {"dit_xl_2": unit_flops(xl), "parameters_dit_xl_2": sum(p.numel() for p in xl.parameters())}
    img, z = torch.randn(1, 3, 256, 256, device="meta"), torch.randn(1, 4, 32, 32, device="meta")
    out["sd_vae"] = {"encode": _flops(lambda: vae.encode(img)), "decode": _flops(lambda: vae.decode(z))}
    clf = {}
    for arch, name in PRETRAINED_IMAGENET.items():
        with torch.device("meta"):
            net = timm.create_model(name, pretrained=False)
        s = net.pretrained_cfg["input_size"][-1]
        clf[arch] = _flops(lambda net=net, s=s: net(torch.randn(1, 3, s, s, device="meta")))
    out["classifiers"] = clf
    return out


# --- 2. CPU timings on random DiTs --------------------------------------------------------------------------


def _cpu_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return median(times)


def cpu_units(model: LatentDiT, batch: int, repeats: int) -> dict[str, float]:
    """CPU seconds per sample of eps, features, JVP and VJP (``batch`` samples or tangents per pass)."""
    from paperlib.clarid import jvp_columns, vjp_rows

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, 32, generator=g)
    xb = x.expand(batch, -1, -1, -1).contiguous()
    y, t = torch.full((batch,), 3), torch.full((batch,), 600)

    def f(z):
        return model.features(z, t[: len(z)], y[: len(z)])

    tangents = torch.randn(batch, x.numel(), generator=g)
    m = f(x[None]).numel()
    cotangents = torch.randn(batch, m, generator=g)
    with torch.no_grad():
        out = {"eps": _cpu_seconds(lambda: model(xb, t, y), repeats) / batch,
               "features": _cpu_seconds(lambda: f(xb), repeats) / batch}
    out["jvp.features"] = _cpu_seconds(lambda: jvp_columns(f, x, tangents, batch), repeats) / batch
    out["vjp.features"] = _cpu_seconds(lambda: vjp_rows(f, x, cotangents, batch), repeats) / batch
    return out


# --- 3. Work counted on the chapters' own code paths ---------------------------------------------------------


class WorkCounter:
    """Counts every network entry of a :class:`LatentDiT` by batch size and mode (plain, inside a JVP, inside a
    VJP): ``eps``, ``features`` (truncated passes), ``encode``/``decode`` (VAE images)."""

    def __init__(self, model: LatentDiT):
        self.model, self.counts, self.mode = model, Counter(), ""

    def _key(self, name: str) -> str:
        return f"{self.mode}.{name}" if self.mode else name

    @contextlib.contextmanager
    def active(self):
        m = self.model
        saved = {k: getattr(m, k) for k in ("features", "pooled_features_many", "encode", "decode")}
        jvp, vjp = clarid_mod.jvp_columns, clarid_mod.vjp_rows

        def wrap(name, fn, n=lambda a: len(a[0])):
            def inner(*a, **kw):
                self.counts[self._key(name)] += n(a)
                return fn(*a, **kw)
            return inner

        def in_mode(mode, fn):
            def inner(*a, **kw):
                self.mode = mode
                try:
                    return fn(*a, **kw)
                finally:
                    self.mode = ""
            return inner

        hook = m.transformer.register_forward_pre_hook(
            lambda mod, args, kwargs: self.counts.update({self._key("eps"): len(args[0])}), with_kwargs=True)
        m.features = wrap("features", saved["features"])
        m.pooled_features_many = wrap("features", saved["pooled_features_many"])
        m.encode, m.decode = wrap("encode", saved["encode"]), wrap("decode", saved["decode"])
        clarid_mod.jvp_columns, clarid_mod.vjp_rows = in_mode("jvp", jvp), in_mode("vjp", vjp)
        try:
            yield self
        finally:
            hook.remove()
            for k in saved:
                delattr(m, k)  # back to the class's methods
            clarid_mod.jvp_columns, clarid_mod.vjp_rows = jvp, vjp


def _tiny_counting_model() -> LatentDiT:
    torch.manual_seed(0)
    tr = DiTTransformer2DModel(sample_size=8, num_layers=2, patch_size=2, in_channels=4, out_channels=8,
                               num_attention_heads=2, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=[32, 64], latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    return LatentDiT(tr, vae, classes=list(range(20)))


def with_krylov(counts: Counter, steps: int, r: int, jacobian: str = "feature") -> Counter:
    """``counts`` with its Jacobian products replaced by ``steps`` Krylov steps of block size ``r`` (``steps``
    blocks of r JVPs, ``steps - 1`` of r VJPs); the class-score Jacobian takes two eps passes per product."""
    out = Counter({k: v for k, v in counts.items() if not k.startswith(("jvp.", "vjp."))})
    unit, calls = ("eps", 2) if jacobian == "class_score" else ("features", 1)
    return out + Counter({f"jvp.{unit}": steps * r * calls, f"vjp.{unit}": (steps - 1) * r * calls})


def chapter_work(params: dict[str, dict], krylov_steps: int) -> dict:
    """Units of work of chapters 2-5 on ImageNet20 in the paper profile (``params``: its parameters per
    notebook), counted on a tiny DiT for one image or sample per code path and scaled."""
    from dataclasses import replace

    from paperlib.canonical import ClaridConfig, clarid_batch, decode_k_sweep
    from paperlib.diffusion import alpha_bar, linear_beta_schedule
    from paperlib.features import image_features, layer_time_features
    from paperlib.selection import two_stage_predictions

    model, ab = _tiny_counting_model(), alpha_bar(linear_beta_schedule())
    images = torch.randint(0, 256, (1, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    label = torch.tensor([0])

    def count(fn) -> Counter:
        with WorkCounter(model).active() as wc:
            fn()
        return wc.counts

    def scaled(c: Counter, k: float) -> Counter:
        return Counter({key: v * k for key, v in c.items()})

    p2, p3, p4, p5 = (params[s] for s in ("02_t_star", "03_evr_elbow", "04_nmi", "05_canonical_samples"))
    t_star = ASSUMED["t_star"]
    K, r = p3["K"], p3["K"] + 4  # block size: K + oversample
    cfg3 = ClaridConfig(t_star=t_star, K=K, num_steps=p3["NUM_STEPS"], cfg_scales=tuple(p3["CFG_SCALES"]),
                        fixed_ks=tuple(k for k in p3["FIXED_KS"] if k <= K), layer=model.jacobian_layer)

    def clarid_one(cfg) -> Counter:
        """One image's CLARID with the Krylov part replaced by ``krylov_steps`` steps of r products."""
        c = count(lambda: clarid_batch(model, images, label, ab, cfg, torch.tensor([0])))
        return with_krylov(c, krylov_steps, r, cfg.jacobian)

    n_classes = 20
    work = {}
    # chapter 2: two-stage samples (C x N per switch time) and the classifiers' val accuracy
    per_sample = count(lambda: two_stage_predictions(model, {}, ab, 500, 1, p2["NUM_STEPS"]))
    n2 = len(p2["T_SWITCHES"]) * n_classes * p2["N_PER_CLASS"]
    work["02_t_star"] = scaled(per_sample, n2 / n_classes) + Counter({"classify": n2 + 1000})
    # chapter 3: CLARID on N_IMAGES, three k-sweep examples (k = 0, 1, 2, 4, 8, K/2, K and k*)
    ks = sorted({0, 1, 2, 4, 8, K // 2, K, 3})
    sweep = with_krylov(count(lambda: decode_k_sweep(model, images[0], 0, ab, cfg3, ks)), krylov_steps, r)
    work["03_evr_elbow"] = scaled(clarid_one(cfg3), p3["N_IMAGES"]) + scaled(sweep, 3)
    # chapter 4: layer x time sweeps (class, null), per-method features at (l_f, t_f) and (l0, t0), the control
    sweep4 = count(lambda: layer_time_features(model, images, label, ab, p4["SWEEP_TIMES"], model.layer_names(),
                                               p4["NUM_STEPS"], progress=False))
    n_sets = 1 + len(cfg3.variants())  # originals + every decoded variant of chapter 3's run
    feats = {t: count(lambda t=t: image_features(model, images, label, ab, t, model.jacobian_layer,
                                                 p4["NUM_STEPS"], progress=False))
             for t in (ASSUMED["t_f"], ASSUMED["t_f_null"])}
    n4 = min(p4["N_SWEEP"], p3["N_IMAGES"])
    work["04_nmi"] = (scaled(sweep4, 2 * n4) + scaled(feats[ASSUMED["t_f"]], (n_sets + 1) * p3["N_IMAGES"])
                      + scaled(feats[ASSUMED["t_f_null"]], n_sets * p3["N_IMAGES"]))
    # chapter 5: class kept (classifiers on 5 sets), CLARID variants on ABLATION_N_CLASS images, Canonical Features
    from paperlib.factors import ABLATIONS

    names = p5.get("ABLATION_VARIANTS") or list(ABLATIONS)
    abl = Counter()
    for name in names:
        o = dict(ABLATIONS[name])
        if "t_star" in o:
            o["t_star"] = t_star + o["t_star"]
        abl += clarid_one(replace(cfg3, cfg_scales=(), fixed_ks=(), **o))
    work["05_canonical_samples"] = (Counter({"classify": 5 * p3["N_IMAGES"] + 2 * len(names) * p5["ABLATION_N_CLASS"]
                                             + p5["ABLATION_N_CLASS"]})
                                    + scaled(abl, p5["ABLATION_N_CLASS"])
                                    + scaled(feats[ASSUMED["t_f"]], 3 * p3["N_IMAGES"])
                                    + scaled(feats[ASSUMED["t_f_null"]], 3 * p3["N_IMAGES"]))
    return {ch: dict(sorted(c.items())) for ch, c in work.items()}


def clarid_cpu(name: str, cfg_model: dict, p3: dict, repeats: int) -> dict:
    """One image's CLARID at the paper profile's settings on a random DiT at the paper's geometry: CPU seconds,
    the work done, and the seconds explained by the network units (CPU seconds per sample of each unit, measured
    on the same model right before and after). Krylov runs :data:`KRYLOV_STEPS` steps (a random DiT's flat
    spectrum would run it to the cap)."""
    from paperlib.canonical import ClaridConfig, clarid_batch
    from paperlib.diffusion import alpha_bar, linear_beta_schedule

    torch.manual_seed(0)
    model = LatentDiT(dit(cfg_model), AutoencoderKL(latent_channels=4, **TINY_VAE_256), classes=list(range(20)))
    ab = alpha_bar(linear_beta_schedule())
    K = p3["K"]
    cfg = ClaridConfig(t_star=ASSUMED["t_star"], K=K, num_steps=p3["NUM_STEPS"],
                       cfg_scales=tuple(p3["CFG_SCALES"]), fixed_ks=tuple(k for k in p3["FIXED_KS"] if k <= K),
                       layer=model.jacobian_layer, max_iter=KRYLOV_STEPS)
    images = torch.randint(0, 256, (1, 3, 256, 256), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    x = torch.rand(1, 3, 256, 256) * 2 - 1

    def measure_units() -> dict[str, float]:
        u = cpu_units(model, batch=8, repeats=repeats)
        with torch.no_grad():
            u["encode"] = _cpu_seconds(lambda: model.encode(x), repeats)
            u["decode"] = _cpu_seconds(lambda: model.decode(torch.randn(1, 4, 32, 32)), repeats)
        return u

    # the machine is shared: units measured right before and after the CLARID runs, CLARID run twice (median)
    before = measure_units()
    totals = []
    for _ in range(2):
        with WorkCounter(model).active() as wc:
            t0 = time.process_time()
            out = clarid_batch(model, images, torch.tensor([3]), ab, cfg, torch.tensor([0]))
            totals.append(time.process_time() - t0)
    after = measure_units()
    units = {k: (before[k] + after[k]) / 2 for k in before}
    total = median(totals)
    explained = sum(units[k] * v for k, v in wc.counts.items() if k in units)
    return {"model": name, "parameters": sum(p.numel() for p in model.transformer.parameters()),
            "cpu_s": total, "cpu_s_runs": totals, "explained_by_units_s": explained, "overhead": total / explained - 1,
            "krylov_steps": int(out["iterations"][0]), "k_star": int(out["k_star"][0]), "work": dict(wc.counts),
            "units_cpu_s": units, "units_cpu_s_before": before, "units_cpu_s_after": after}


def main(argv: list[str] | None = None) -> None:
    from paperlib.book import profile_parameters

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "dit_cost.json"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu-tflops", type=float, default=10.0, help="assumed achieved float32 TFLOP/s")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    params = {s: profile_parameters("paper", s)
              for s in ("02_t_star", "03_evr_elbow", "04_nmi", "05_canonical_samples")}
    flops = meta_flops()
    print("FLOPs per sample (G):", {k: round(v / 1e9, 1) for k, v in flops["dit_xl_2"].items()}, flush=True)

    timing = {}
    for name, cfg in CPU_MODELS.items():
        torch.manual_seed(0)
        model = LatentDiT(dit(cfg), AutoencoderKL(latent_channels=4, **TINY_VAE_256), classes=list(range(20)))
        secs = cpu_units(model, batch=8 if name != "S/2" else 4, repeats=args.repeats)
        with torch.device("meta"):
            f = unit_flops(dit(cfg).requires_grad_(False))
        timing[name] = {"parameters": sum(p.numel() for p in model.transformer.parameters()),
                        "cpu_s_per_sample": secs, "gflop_per_sample": {k: f[k] / 1e9 for k in secs},
                        "achieved_gflops": {k: f[k] / 1e9 / secs[k] for k in secs}}
        print(name, {k: round(v, 1) for k, v in timing[name]["achieved_gflops"].items()}, "GFLOP/s", flush=True)
    clarid_runs = [clarid_cpu(n, CPU_MODELS[n], params["03_evr_elbow"], args.repeats) for n in ("tiny", "small")]
    for c in clarid_runs:
        print(f"CLARID per image on {c['model']}: {c['cpu_s']:.1f} CPU s, overhead {100 * c['overhead']:.0f}% "
              f"beyond the network units, {c['krylov_steps']} Krylov steps", flush=True)

    work = chapter_work(params, KRYLOV_STEPS)
    unit = {**flops["dit_xl_2"], "encode": flops["sd_vae"]["encode"], "decode": flops["sd_vae"]["decode"],
            "classify": sum(flops["classifiers"].values())}
    # the larger random DiT (the share shrinks with the model's size); never below 0 (noise of a shared machine)
    overhead = max(0.0, clarid_runs[-1]["overhead"])
    # JVPs and VJPs run at a lower rate than plain passes: their rate relative to eps on the largest random DiT
    rate = timing["S/2"]["achieved_gflops"]
    efficiency = {k: min(1.0, rate[k.replace(".eps", ".features")] / rate["eps"]) for k in unit if "." in k}

    def gpu_seconds(w: dict) -> float:
        return sum(unit[k] * v / efficiency.get(k, 1.0) for k, v in w.items()) / 1e12 / args.gpu_tflops

    chapters = {}
    for ch, w in work.items():
        tflop = sum(unit[k] * v for k, v in w.items()) / 1e12
        chapters[ch] = {"work": w, "pflop": tflop / 1e3, "gpu_hours": gpu_seconds(w) * (1 + overhead) / 3600}
    per_image = with_krylov(Counter(clarid_runs[0]["work"]), KRYLOV_STEPS, params["03_evr_elbow"]["K"] + 4)
    clarid_s = gpu_seconds(per_image) * (1 + overhead)
    result = {
        "what": "estimated GPU hours of chapters 2-5 on ImageNet20 with DiT-XL/2 (profile 'paper'): an "
                "extrapolation from FLOPs counted on meta-device models and CPU timings of random DiTs",
        "assumptions": {"gpu_achieved_tflops": args.gpu_tflops,
                        "gpu_note": "A100 float32 (no TF32) peaks at 19.5 TFLOP/s; half of it assumed achieved",
                        "krylov_steps": KRYLOV_STEPS, "krylov_steps_source": KRYLOV_SOURCE, **ASSUMED,
                        "overhead_beyond_network": overhead,
                        "overhead_source": "share of CLARID's CPU time outside the network units on the 'small' "
                                           "random DiT (larger than on 'tiny': it shrinks with the model), at least 0",
                        "unit_efficiency": efficiency,
                        "unit_efficiency_source": "achieved GFLOP/s of JVP / VJP relative to the eps forward on the "
                                                  "S/2 random DiT (CPU)"},
        "flops": flops,
        "cpu_timing": timing,
        "clarid_cpu": clarid_runs,
        "clarid_per_image_gpu_s": clarid_s,
        "chapters": chapters,
        "total_gpu_hours": sum(c["gpu_hours"] for c in chapters.values()),
        "profile": params,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, 1 thread, load {os.getloadavg()[0]:.1f}",
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bench_seconds": round(time.time() - started, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"CLARID per image on the GPU: {clarid_s:.0f} s; per chapter (GPU h): "
          + ", ".join(f"{ch[:2]} {c['gpu_hours']:.1f}" for ch, c in chapters.items())
          + f"; total {result['total_gpu_hours']:.1f} h -> {args.out}")


if __name__ == "__main__":
    main()
