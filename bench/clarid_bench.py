"""Benchmark: matrix-free subspace and block Krylov iteration vs exact Jacobian + SVD for CLARID's directions.

Measures, on the book's 32x32 CIFAR-10 CDM (n = 3 * 32 * 32 = 3072 inputs, mid-block features), for a few
images inverted to t*: wall time and peak memory of each method (each in its own process, so the peaks do
not mix), agreement of the top-K singular values and the largest principal angle between the two subspaces;
and the per-image CLARID time split into inversion, directions and decoding.

    python bench/clarid_bench.py [--images 3] [--K 16] [--t-star 600] [--threads 2] [--out bench/results.json]

Without the trained CDM artifact it uses the EMA weights of the training checkpoint if one exists, else an
untrained model of the same architecture (reported in the output): timings and memory are the same, the
spectra of an untrained model are not meaningful.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

import torch


def _model(threads: int):
    from paperlib.models import ClassConditionalUNet
    from paperlib.train import _paths, cdm_recipe, load_cdm

    torch.set_num_threads(threads)
    recipe = cdm_recipe("cifar10", "full")
    for pub in (True, False):
        final, resume = _paths(recipe, pub)
        if final.exists():
            return load_cdm(final)[0], recipe, "trained"
        if resume.exists():  # training under way: its EMA weights so far
            from paperlib.cache import load_artifact
            from paperlib.train import _strip

            tensors, manifest = load_artifact(resume)
            model = ClassConditionalUNet(recipe.cdm)
            ema = _strip(tensors, "ema.")
            ema.pop("n_averaged")
            model.load_state_dict(ema)
            return model.eval().requires_grad_(False), recipe, f"partly trained ({manifest['step']} steps, EMA)"
    torch.manual_seed(0)
    return ClassConditionalUNet(recipe.cdm).eval().requires_grad_(False), recipe, "untrained (no artifact yet)"


def _latents(model, recipe, n: int, t_star: int):
    from paperlib.diffusion import ddim_invert

    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    try:
        from paperlib.data import load_dataset, to_model_range

        images, labels = load_dataset(recipe.data, "test")
        x0, y = to_model_range(images[:n]), labels[:n]
    except FileNotFoundError:
        y = torch.arange(n) % 10
    tic = time.perf_counter()
    x_t = ddim_invert(model, x0, y, recipe.train.alpha_bar(), t_star, num_steps=100)
    return x_t, y, (time.perf_counter() - tic) / n


def _frozen(snapshot: str, threads: int):
    """The model the parent snapshotted (a checkpoint may be rewritten while the benchmark runs)."""
    from safetensors.torch import load_file

    from paperlib.models import ClassConditionalUNet
    from paperlib.train import cdm_recipe

    torch.set_num_threads(threads)
    recipe = cdm_recipe("cifar10", "full")
    model = ClassConditionalUNet(recipe.cdm)
    model.load_state_dict(load_file(snapshot))
    return model.eval().requires_grad_(False), recipe


def _child(method: str, K: int, n: int, t_star: int, threads: int, snapshot: str, queue) -> None:
    from paperlib.clarid import extraneous_directions

    model, recipe = _frozen(snapshot, threads)
    x_t, y, _ = _latents(model, recipe, n, t_star)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = []
    t = torch.tensor([t_star])
    for i in range(n):

        def f(z, yi=y[i : i + 1]):
            return model.features(z, t.expand(len(z)), yi.expand(len(z)), "mid")

        tic = time.perf_counter()
        V, sigma, info = extraneous_directions(f, x_t[i], K, method, generator=i, return_info=True, tol=1e-4,
                                               max_iter=100)
        out.append({"seconds": time.perf_counter() - tic, "sigma": sigma.tolist(), "V": V.numpy(),  # by value
                    "iterations": info["iterations"]})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"method": method, "peak_rss_mb": peak / 1024, "increment_mb": (peak - base) / 1024,
               "per_image": out})


ITERATIVE = ("subspace", "krylov")


def _compare(it: dict, ex: dict) -> dict:
    """Per-image and mean agreement/time of an iterative method's results with the exact ones."""
    per_image = []
    for a, b in zip(it["per_image"], ex["per_image"]):
        Va, Vb = torch.from_numpy(a["V"]), torch.from_numpy(b["V"])
        cos = torch.linalg.svdvals(Vb.T @ Va).clamp(max=1)
        rel = (torch.tensor(a["sigma"]) - torch.tensor(b["sigma"])).abs() / torch.tensor(b["sigma"])
        per_image.append({"speedup": b["seconds"] / a["seconds"], "seconds": a["seconds"], "exact_s": b["seconds"],
                          "iterations": a["iterations"], "max_rel_sigma_err_top5": rel[:5].max().item(),
                          "max_rel_sigma_err": rel.max().item(),
                          "max_angle_deg": torch.rad2deg(torch.arccos(cos.min())).item()})
    mean = lambda key: sum(r[key] for r in per_image) / len(per_image)  # noqa: E731
    worst = lambda key: max(r[key] for r in per_image)  # noqa: E731
    return {
        "time_s": mean("seconds"), "speedup": mean("speedup"), "iterations": mean("iterations"),
        "peak_rss_mb": it["peak_rss_mb"], "jacobian_memory_mb": it["increment_mb"],
        "memory_ratio": it["increment_mb"] / max(ex["increment_mb"], 1e-9),
        "max_rel_sigma_err_top5": worst("max_rel_sigma_err_top5"), "max_rel_sigma_err": worst("max_rel_sigma_err"),
        "max_angle_deg": worst("max_angle_deg"),
        "targets": {"speedup >= 5": mean("speedup") >= 5,
                    "memory <= 1/4": it["increment_mb"] <= ex["increment_mb"] / 4,
                    "top singular values within 1%": worst("max_rel_sigma_err_top5") <= 0.01},
        "per_image": per_image,
    }


def run(images: int, K: int, t_star: int, threads: int) -> dict:
    import tempfile

    from safetensors.torch import save_file

    model, recipe, status = _model(threads)
    ctx = mp.get_context("spawn")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = str(Path(tmp) / "model.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, snapshot)
        for method in ("exact", *ITERATIVE):
            q = ctx.Queue()
            p = ctx.Process(target=_child, args=(method, K, images, t_star, threads, snapshot, q))
            p.start()
            results[method] = q.get()
            p.join()
    ex = results["exact"]
    methods = {m: _compare(results[m], ex) for m in ITERATIVE}

    # Per-image CLARID split, in this process.
    from paperlib.diffusion import ddim_decode

    x_t, y, inv_s = _latents(model, recipe, 1, t_star)
    tic = time.perf_counter()
    ddim_decode(model, x_t, y, recipe.train.alpha_bar(), t_star, 0, 100)
    dec_s = time.perf_counter() - tic
    return {
        "model": status, "n": 3 * 32 * 32, "K": K, "t_star": t_star, "images": images, "threads": threads,
        "machine": f"{platform.machine()} {mp.cpu_count()} cpu", "torch": torch.__version__,
        "time_exact_s": sum(r["seconds"] for r in ex["per_image"]) / images,
        "peak_rss_exact_mb": ex["peak_rss_mb"], "jacobian_memory_exact_mb": ex["increment_mb"],
        "methods": methods,
        "clarid_split_s": {"inversion": inv_s, **{f"directions ({m})": methods[m]["time_s"] for m in ITERATIVE},
                           "decoding": dec_s},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--K", type=int, default=16)
    ap.add_argument("--t-star", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = ap.parse_args()
    summary = run(args.images, args.K, args.t_star, args.threads)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    brief = {**summary, "methods": {m: {k: v for k, v in r.items() if k != "per_image"}
                                    for m, r in summary["methods"].items()}}
    print(json.dumps(brief, indent=2))


if __name__ == "__main__":
    main()
