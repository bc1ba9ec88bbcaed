"""Benchmark: evaluation throughput (images per second) of each attack and corruption of paperlib.robustness.

Model: a CIFAR-style ResNet-18 (timm ``resnet18`` with a 3x3 stride-1 stem and no max-pool, the paper's
CIFAR-10 student architecture, untrained) behind :class:`paperlib.robustness.Normalized`, on a fixed batch of
CIFAR-10 test images (random images without the data). The labels are the model's own predictions, so every
image starts correctly classified: APGD and Square attack only those (and CW and Square stop early on
success), so these are the costs of a fully accurate student, an upper bound for a real one.

    python bench/robustness_bench.py [--images 16] [--repeats 3] [--square-queries 100] [--threads 1]
                                     [--out bench/robustness_results.json]

Protocol (the house method of :mod:`paperlib.benchstats` and ``bench/clarid_bench.py``): in repeat ``r`` the
methods (clean forward, the Table 5 attacks, Square) run back to back on the same batch in an order rotated
by ``r``, so a drift of the machine's speed hits every method alike; each method's images per second is
reported as the median over the repeats with its min-max, and its cost in clean forward passes as the
median of the paired ratios ``method time / clean time`` of the same repeat (with min-max, IQR and the
spread verdict), never a mean of ratios. Square runs ``--square-queries`` queries (1000 in the evaluation:
up to 10x its time here). The 15 corruptions (severity 3) are timed the same way, without a model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from statistics import median

import torch

from paperlib.benchstats import SPREAD_RULE, paired_ratios, quantile, rotated_order, summarize_ratios


def cifar_resnet18() -> torch.nn.Module:
    """timm ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool), 10 classes, normalised inputs."""
    import timm

    from paperlib.robustness import Normalized

    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=10, pretrained=False)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    return Normalized(net, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)).eval()


def _images(n: int) -> tuple[torch.Tensor, str]:
    try:
        from paperlib.data import load_cifar10

        return load_cifar10("test")[0][:: 10_000 // n][:n], "CIFAR-10 test images"
    except FileNotFoundError:
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), "random images (no CIFAR-10)"


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": median(values), "min": min(values), "max": max(values),
            "q1": quantile(values, 0.25), "q3": quantile(values, 0.75)}


def run(images: int, repeats: int, square_queries: int, threads: int) -> dict:
    """The whole benchmark (module docstring); a JSON-ready summary."""
    from paperlib.corruptions import CORRUPTIONS, corrupt
    from paperlib.robustness import SQUARE_ATTACKS, TABLE5_ATTACKS, attack, predict_labels

    torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    model = cifar_resnet18()
    x8, source = _images(images)
    x = x8.float() / 255
    with torch.no_grad():
        y = predict_labels(model, x)
    specs = {**TABLE5_ATTACKS, "square": {**SQUARE_ATTACKS["square"], "n_queries": square_queries}}
    methods = ["clean", *specs]

    def one(method: str, seed: int, n: int = images) -> float:
        tic = time.perf_counter()
        if method == "clean":
            with torch.no_grad():
                model(x[:n])
        else:
            attack(model, x[:n], y[:n], specs[method], seed=seed)
        return time.perf_counter() - tic

    for m in methods:  # untimed warm-up on two images (first calls import and allocate)
        one(m, 0, n=2)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(repeats):
        for m in rotated_order(methods, r):
            times[m].append(one(m, r))
            print(f"[repeat {r}] {m:22s} {times[m][-1]:7.2f} s", file=sys.stderr, flush=True)

    ctimes: dict[str, list[float]] = {c: [] for c in CORRUPTIONS}
    for r in range(repeats):
        for c in rotated_order(list(CORRUPTIONS), r):
            tic = time.perf_counter()
            corrupt(x8, c, 3, seed=r)
            ctimes[c].append(time.perf_counter() - tic)

    attacks = {}
    for m in methods:
        ips = [images / t for t in times[m]]
        entry = {"images_per_s": _spread(ips), "seconds": _spread(times[m])}
        if m != "clean":
            entry["clean_forward_equivalents"] = summarize_ratios(paired_ratios(times[m], times["clean"])).to_dict()
        attacks[m] = entry
    corruption = {c: {"images_per_s": _spread([images / t for t in ts])} for c, ts in ctimes.items()}
    per_image = {m: median(times[m]) / images for m in methods}
    table5 = sum(per_image[m] for m in TABLE5_ATTACKS) + per_image["clean"]
    corr = 5 * sum(median(ts) / images for ts in ctimes.values()) + 75 * per_image["clean"]
    return {
        "model": "CIFAR-style ResNet-18 (timm resnet18, 3x3 stem, no max-pool), untrained, 11.2M parameters",
        "images": images, "image_source": source, "repeats": repeats, "threads": threads,
        "square_queries": square_queries, "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_avg_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "protocol": ("methods interleaved on one fixed batch, order rotated by the repeat; images/s: median and "
                     "min-max over repeats; cost: median of paired ratios method time / clean forward time of "
                     "the same repeat; labels = the model's predictions (every image attacked: upper bound)"),
        "spread_rule": SPREAD_RULE,
        "attacks": attacks,
        "corruptions_severity3": corruption,
        "estimate_hours_per_10k_images": {
            "attacks (Table 5 set + clean)": 10_000 * table5 / 3600,
            f"square ({square_queries} queries; 1000 in the evaluation)": 10_000 * per_image["square"] / 3600,
            "corruptions (15 x 5, corrupt + forward)": 10_000 * corr / 3600,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16, help="batch of CIFAR-10 test images (default 16)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--square-queries", type=int, default=100, help="Square's queries here (default 100)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("robustness_results.json")))
    args = ap.parse_args()
    if args.images < 1 or args.repeats < 1 or args.square_queries < 1:
        ap.error("--images, --repeats and --square-queries must be >= 1")
    summary = run(args.images, args.repeats, args.square_queries, args.threads)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    brief = {m: round(v["images_per_s"]["median"], 2) for m, v in summary["attacks"].items()}
    print(json.dumps({"images_per_s (median)": brief, "hours per 10k": summary["estimate_hours_per_10k_images"]},
                     indent=2))


if __name__ == "__main__":
    main()
