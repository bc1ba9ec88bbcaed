"""Benchmark: matrix-free subspace and block Krylov iteration vs exact Jacobian + SVD for CLARID's directions.

Measures, on the book's 32x32 CIFAR-10 CDM (n = 3 * 32 * 32 = 3072 inputs, mid-block features), for a few
images inverted to t*: the wall time of each method, its peak memory, the agreement of the top-K singular
values and the largest principal angle between the subspaces; and the per-image CLARID time split into
inversion, directions and decoding.

    python bench/clarid_bench.py [--images 3] [--repeats 3] [--K 16] [--t-star 900] [--threads 1]
                                 [--out bench/results.json]
    python bench/clarid_bench.py --only exact|subspace|krylov|none [--images 1]   # one side, no output file

Protocol (for a noisy, shared machine):

- Each method runs in its own worker process (one per method, alive for the whole benchmark), so that its
  peak RSS (``ru_maxrss``) is its own and the peaks do not mix. Only one worker computes at a time.
- The sides are interleaved: for repeat ``r`` and image ``i`` (measurement ``k = r * images + i``) the three
  methods run back to back in the order exact, subspace, krylov rotated by ``k`` (A B C, C A B, B C A, ...),
  so a drift of the machine's speed hits every side alike and each side takes each position equally often.
  The iterative methods start from seed ``i + 1000 r``.
- A speed-up is the set of *paired* ratios ``exact time / method time`` of the same repeat and image,
  reported as its median, min-max, interquartile range and number of pairs; a mean of ratios is never
  reported. The same is given for the processes' CPU seconds (``speedup_cpu``: less sensitive to waiting for a
  core, but blind to time lost that way). The spread rule (:mod:`paperlib.benchstats`): flagged "spread too
  wide to trust" if max/min of the paired ratios > 2 or IQR/median > 0.5, and "too few pairs" below 3 pairs.
- Each worker warms up forward- and reverse-mode autodiff (two products, untimed) before the first run.
- Targets: median paired speed-up >= 5; Jacobian memory (peak RSS increment over the worker's baseline with
  the model and latents loaded, one per process) <= 1/4 of the exact method's; top-5 singular values within
  1% of the exact ones in every pair (worst case).

Without the trained CDM artifact it uses the EMA weights of the training checkpoint if one exists, else an
untrained model of the same architecture (reported in the output): timings and memory are the same, the
spectra of an untrained model are not meaningful.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from statistics import median

import torch

from paperlib.benchstats import SPREAD_RULE, paired_ratios, rotated_order, summarize_ratios

METHODS = ("exact", "subspace", "krylov")
ITERATIVE = ("subspace", "krylov")


def _model(threads: int) -> tuple[torch.nn.Module, object, str]:
    """The book's CIFAR-10 CDM (finished artifact, else the training checkpoint's EMA, else untrained)."""
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
            from paperlib.checkpoint import strip_prefix

            tensors, manifest = load_artifact(resume)
            model = ClassConditionalUNet(recipe.cdm)
            ema = strip_prefix(tensors, "ema.")
            ema.pop("n_averaged")
            model.load_state_dict(ema)
            return model.eval().requires_grad_(False), recipe, f"partly trained ({manifest['step']} steps, EMA)"
    torch.manual_seed(0)
    return ClassConditionalUNet(recipe.cdm).eval().requires_grad_(False), recipe, "untrained (no artifact yet)"


def _latents(model: torch.nn.Module, recipe, n: int, t_star: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The first ``n`` CIFAR-10 test images (random images without the data) inverted to ``t*``, their
    labels, and the inversion's seconds per image."""
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


def _directions(model: torch.nn.Module, x_t: torch.Tensor, y: torch.Tensor, i: int, t_star: int, K: int,
                method: str, seed: int) -> dict:
    """Top-``K`` directions of image ``i`` by ``method``, timed (wall and this process's CPU seconds)."""
    from paperlib.clarid import extraneous_directions

    t = torch.tensor([t_star])

    def f(z: torch.Tensor, yi: torch.Tensor = y[i : i + 1]) -> torch.Tensor:
        return model.features(z, t.expand(len(z)), yi.expand(len(z)), "mid")

    tic, cpu = time.perf_counter(), time.process_time()
    V, sigma, info = extraneous_directions(f, x_t[i], K, method, generator=seed, return_info=True, tol=1e-4,
                                           max_iter=100)
    return {"seconds": time.perf_counter() - tic, "cpu_s": time.process_time() - cpu, "sigma": sigma.tolist(),
            "V": V.numpy(), "iterations": info["iterations"]}  # V by value


def _frozen(snapshot: str, threads: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model and latents the parent snapshotted (a checkpoint may be rewritten while the benchmark runs)."""
    from safetensors.torch import load_file

    from paperlib.checkpoint import strip_prefix
    from paperlib.models import ClassConditionalUNet
    from paperlib.train import cdm_recipe

    torch.set_num_threads(threads)
    tensors = load_file(snapshot)
    model = ClassConditionalUNet(cdm_recipe("cifar10", "full").cdm)
    model.load_state_dict(strip_prefix(tensors, "model."))
    return model.eval().requires_grad_(False), tensors["x_t"], tensors["y"]


def _worker(method: str, K: int, t_star: int, threads: int, snapshot: str, conn) -> None:
    """One method's process: runs ``("run", image, seed)`` requests until ``("stop",)``, then reports its peak
    RSS and the increment over its baseline (model and latents loaded, autodiff warmed up)."""
    try:
        from paperlib.clarid import jvp_columns, vjp_rows

        model, x_t, y = _frozen(snapshot, threads)
        t = torch.tensor([t_star])

        def f(z: torch.Tensor) -> torch.Tensor:
            return model.features(z, t.expand(len(z)), y[:1].expand(len(z)), "mid")

        # Untimed warm-up of forward- and reverse-mode AD (first calls pay one-off set-up costs).
        u = jvp_columns(f, x_t[0], torch.eye(x_t[0].numel())[:2])
        vjp_rows(f, x_t[0], u)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send(("ready", None))
        while (msg := conn.recv())[0] == "run":
            conn.send(("ok", _directions(model, x_t, y, msg[1], t_star, K, method, msg[2])))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send(("mem", {"peak_rss_mb": peak / 1024, "increment_mb": (peak - base) / 1024}))
    except Exception:  # reported to the parent, which raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _reply(conn, method: str, want: str):
    kind, payload = conn.recv()
    if kind != want:
        raise RuntimeError(f"{method} worker: expected {want!r}, got {kind!r}\n{payload}")
    return payload


def _measure(images: int, repeats: int, K: int, t_star: int, threads: int, snapshot: str) -> tuple[dict, dict]:
    """Interleaved, repeated runs of every method in its own worker.

    Returns:
        ``runs[method]``: records with ``repeat``, ``image``, ``position`` (0-based place in its round) and the
        results of :func:`_directions`; ``memory[method]``: the worker's peak RSS and increment (MB).
    """
    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    for m in METHODS:
        parent, child = ctx.Pipe()
        procs[m] = ctx.Process(target=_worker, args=(m, K, t_star, threads, snapshot, child), daemon=True)
        procs[m].start()
        child.close()
        conns[m] = parent
    try:
        for m in METHODS:
            _reply(conns[m], m, "ready")
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for r in range(repeats):
            for i in range(images):
                order = rotated_order(METHODS, r * images + i)
                for pos, m in enumerate(order):
                    conns[m].send(("run", i, i + 1000 * r))
                    rec = _reply(conns[m], m, "ok")
                    runs[m].append({"repeat": r, "image": i, "position": pos, **rec})
                    print(f"[repeat {r} image {i}] {m:8s} {rec['seconds']:7.2f} s", file=sys.stderr, flush=True)
        memory = {}
        for m in METHODS:
            conns[m].send(("stop",))
            memory[m] = _reply(conns[m], m, "mem")
    finally:
        for m in METHODS:
            procs[m].join(timeout=60)
            if procs[m].is_alive():  # only our own workers, by handle
                procs[m].terminate()
    return runs, memory


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": median(values), "min": min(values), "max": max(values)}


def _compare(it: list[dict], ex: list[dict], mem_it: dict, mem_ex: dict) -> dict:
    """Paired speed-ups (median and spread), accuracy and memory of an iterative method vs the exact one."""
    exact = {(e["repeat"], e["image"]): e for e in ex}
    pairs = []
    for a in it:
        b = exact[a["repeat"], a["image"]]
        Va, Vb = torch.from_numpy(a["V"]), torch.from_numpy(b["V"])
        cos = torch.linalg.svdvals(Vb.T @ Va).clamp(max=1)
        rel = (torch.tensor(a["sigma"]) - torch.tensor(b["sigma"])).abs() / torch.tensor(b["sigma"])
        pairs.append({"repeat": a["repeat"], "image": a["image"], "position": a["position"],
                      "exact_position": b["position"], "exact_s": b["seconds"], "seconds": a["seconds"],
                      "ratio": b["seconds"] / a["seconds"], "exact_cpu_s": b["cpu_s"], "cpu_s": a["cpu_s"],
                      "iterations": a["iterations"], "max_rel_sigma_err_top5": rel[:5].max().item(),
                      "max_rel_sigma_err": rel.max().item(),
                      "max_angle_deg": torch.rad2deg(torch.arccos(cos.min())).item()})
    speedup = summarize_ratios(paired_ratios([p["exact_s"] for p in pairs], [p["seconds"] for p in pairs]))
    cpu = summarize_ratios(paired_ratios([p["exact_cpu_s"] for p in pairs], [p["cpu_s"] for p in pairs]))
    worst = lambda key: max(p[key] for p in pairs)  # noqa: E731
    memory_ratio = mem_it["increment_mb"] / max(mem_ex["increment_mb"], 1e-9)
    return {
        "speedup": speedup.to_dict(), "speedup_cpu": cpu.to_dict(),
        "time_s": _spread([p["seconds"] for p in pairs]), "iterations": _spread([p["iterations"] for p in pairs]),
        "peak_rss_mb": mem_it["peak_rss_mb"], "jacobian_memory_mb": mem_it["increment_mb"],
        "memory_ratio": memory_ratio,
        "max_rel_sigma_err_top5": worst("max_rel_sigma_err_top5"), "max_rel_sigma_err": worst("max_rel_sigma_err"),
        "max_angle_deg": worst("max_angle_deg"),
        "targets": {"speedup >= 5 (median paired ratio)": speedup.median >= 5,
                    "memory <= 1/4": memory_ratio <= 0.25,
                    "top singular values within 1% (worst pair)": worst("max_rel_sigma_err_top5") <= 0.01},
        "timing_trusted": not speedup.too_wide,
        "pairs": pairs,
    }


def run(images: int, repeats: int, K: int, t_star: int, threads: int) -> dict:
    """The whole benchmark (see the module docstring); a JSON-ready summary."""
    import tempfile

    from safetensors.torch import save_file

    from paperlib.diffusion import ddim_decode

    load_start = os.getloadavg()[0]
    model, recipe, status = _model(threads)
    x_t, y, _ = _latents(model, recipe, images, t_star)
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = str(Path(tmp) / "snapshot.safetensors")
        save_file({**{f"model.{k}": v.contiguous() for k, v in model.state_dict().items()},
                   "x_t": x_t.contiguous(), "y": y.contiguous()}, snapshot)
        runs, memory = _measure(images, repeats, K, t_star, threads, snapshot)
    methods = {m: _compare(runs[m], runs["exact"], memory[m], memory["exact"]) for m in ITERATIVE}

    # Per-image CLARID split, in this process (workers stopped): median of `repeats` one-image runs.
    inv, dec = [], []
    for _ in range(repeats):
        x1, y1, inv_s = _latents(model, recipe, 1, t_star)
        tic = time.perf_counter()
        ddim_decode(model, x1, y1, recipe.train.alpha_bar(), t_star, 0, 100)
        inv.append(inv_s)
        dec.append(time.perf_counter() - tic)
    ex = runs["exact"]
    return {
        "model": status, "n": 3 * 32 * 32, "K": K, "t_star": t_star, "images": images, "repeats": repeats,
        "threads": threads, "machine": f"{platform.machine()} {mp.cpu_count()} cpu", "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_avg_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "protocol": ("one worker process per method; for repeat r and image i the methods run back to back in "
                     "the order exact, subspace, krylov rotated by k = r * images + i; speed-up = median of the "
                     "paired ratios exact time / method time (same repeat and image); no mean of ratios"),
        "spread_rule": SPREAD_RULE,
        "summary": {m: f"{m} vs exact: {methods[m]['speedup']['verdict']}" for m in ITERATIVE},
        "exact": {"time_s": _spread([e["seconds"] for e in ex]), "cpu_s": _spread([e["cpu_s"] for e in ex]),
                  "peak_rss_mb": memory["exact"]["peak_rss_mb"],
                  "jacobian_memory_mb": memory["exact"]["increment_mb"]},
        "methods": methods,
        "clarid_split_s": {"inversion": median(inv),
                           **{f"directions ({m})": methods[m]["time_s"]["median"] for m in ITERATIVE},
                           "directions (exact)": median(e["seconds"] for e in ex), "decoding": median(dec)},
    }


def only(method: str, images: int, K: int, t_star: int, threads: int) -> dict:
    """One side alone, in this process (for timing whole processes from outside): setup, then ``method`` on
    each image once (seed ``i``); ``"none"``: the setup only (model, data, inversion)."""
    tic = time.perf_counter()
    model, recipe, status = _model(threads)
    x_t, y, _ = _latents(model, recipe, images, t_star)
    out = {"method": method, "model": status, "setup_s": time.perf_counter() - tic, "seconds": []}
    if method != "none":
        for i in range(images):
            out["seconds"].append(_directions(model, x_t, y, i, t_star, K, method, i)["seconds"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=3, help="CIFAR-10 test images (default 3)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the images (default 3)")
    ap.add_argument("--K", type=int, default=16, help="directions per image (default 16)")
    ap.add_argument("--t-star", type=int, default=900, help="inversion time (default 900, the book's CIFAR-10 t*)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per process (default 1: on a shared machine, threads beyond the free "
                         "cores wait on each other and distort the times)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    ap.add_argument("--only", choices=(*METHODS, "none"),
                    help="run one side alone in this process and print its times (no --out)")
    args = ap.parse_args()
    if args.images < 1 or args.repeats < 1:
        ap.error("--images and --repeats must be >= 1")
    if args.only:
        print(json.dumps(only(args.only, args.images, args.K, args.t_star, args.threads)))
        return
    summary = run(args.images, args.repeats, args.K, args.t_star, args.threads)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    brief = {**summary, "methods": {m: {k: v for k, v in r.items() if k != "pairs"}
                                    for m, r in summary["methods"].items()}}
    print(json.dumps(brief, indent=2))


if __name__ == "__main__":
    main()
