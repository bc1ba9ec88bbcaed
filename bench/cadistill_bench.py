"""Benchmark: training throughput (images per second) of each distillation method against Vanilla.

Measures the real training path (:func:`paperlib.cadistill.train_student`: pairing draws, augmentation, one
student forward and backward, the losses of :mod:`paperlib.distill`, the SGD step) of the book's CIFAR-10
student (ResNet-20, batch 128, 32x32) for each method in :data:`paperlib.cadistill.METHODS`:

    python bench/cadistill_bench.py [--steps 6] [--repeats 3] [--threads 1] [--batch 128] [--blocks 3]
                                    [--out bench/cadistill_results.json]

Protocol (for a noisy, shared machine; the house method of ``bench/clarid_bench.py`` and
:mod:`paperlib.benchstats`):

- The data is synthetic, of CIFAR-10's shape: ``steps x batch`` random training images of 10 classes, a
  10% bank of random Canonical Samples / CFG outputs with random 64-d features, and a one-to-one raw bank for
  DMDistill. A step's cost does not depend on the pixel or feature values, only on the shapes.
- Each measurement trains one fresh student for one epoch of ``steps`` steps (the cost of building it is a few
  milliseconds). Before the first measurement every method runs once untimed (warm-up of the kernels for its
  batch shapes).
- The sides are interleaved: in repeat ``r`` the four methods run back to back in the order Vanilla,
  DMDistill, CFGDistill, CaDistill rotated by ``r``, so a drift of the machine's speed hits every side alike.
- A method's cost is the set of *paired* ratios ``method time / Vanilla time`` of the same repeat, reported as
  the median with min-max, interquartile range and number of pairs (never a mean of ratios), for wall time and
  for CPU time (``process_time``); the spread rule of :mod:`paperlib.benchstats` flags a set "spread too wide to
  trust" when max/min > 2 or IQR/median > 0.5, "too few pairs" below 3. Images per second count the training
  images only (a CaDistill step also pushes ``batch`` bank images through the student).
- Target: a CaDistill epoch costs <= 1.3x a Vanilla epoch (median paired wall-time ratio). A CFGDistill or
  CaDistill step pushes twice the images of a Vanilla step through the student (B training and B bank
  images, spec §8.1), so expect about 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from statistics import median

import torch

from paperlib.benchstats import SPREAD_RULE, paired_ratios, rotated_order, summarize_ratios
from paperlib.cadistill import BANK_OF_METHOD, METHODS, student_recipe, train_student
from paperlib.data import fingerprint
from paperlib.students import StudentConfig
from paperlib.teaching import TeachingBank

TARGET = 1.3


def _data(n: int, fraction: float = 0.1, dim: int = 64) -> tuple[torch.Tensor, torch.Tensor, dict[str, TeachingBank]]:
    """Synthetic CIFAR-shaped training data and a bank of each kind (see the module docstring)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    meta = {"cdm": "synthetic", "data": fingerprint(images, labels)}
    subset = torch.randperm(n, generator=g)[: max(10, round(fraction * n))]
    subset = subset[torch.argsort(labels[subset])]
    canon = torch.randint(0, 256, (len(subset), 3, 32, 32), generator=g, dtype=torch.uint8)
    banks = {kind: TeachingBank(kind, "cifar10", labels[subset], subset, torch.randn(len(subset), dim, generator=g),
                                canon, torch.randn(len(subset), dim, generator=g), meta) for kind in ("clarid", "cfg")}
    banks["raw"] = TeachingBank("raw", "cifar10", labels, torch.arange(n), torch.randn(n, dim, generator=g), meta=meta)
    return images, labels, banks


def _run(method: str, images, labels, banks, batch: int, student: StudentConfig) -> dict:
    recipe = student_recipe("cifar10", method, "full", epochs=1, batch_size=batch, student=student,
                            warmup_epochs=0.5)
    kind = BANK_OF_METHOD[method]
    tic, cpu = time.perf_counter(), time.process_time()
    _, history = train_student(recipe, images, labels, 10, bank=None if kind is None else banks[kind], progress=False)
    return {"seconds": time.perf_counter() - tic, "cpu_s": time.process_time() - cpu, "loss": history["loss"][0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=3, help="BasicBlocks per stage (3: ResNet-20)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("cadistill_results.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    student = StudentConfig(blocks=args.blocks)
    images, labels, banks = _data(args.steps * args.batch)
    for method in METHODS:  # warm-up, untimed
        _run(method, images[: 2 * args.batch], labels[: 2 * args.batch], _data(2 * args.batch)[2], args.batch,
             student)
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for r in range(args.repeats):
        for method in rotated_order(METHODS, r):
            runs[method].append({"repeat": r, **_run(method, images, labels, banks, args.batch, student)})
            print(f"repeat {r} {method}: {runs[method][-1]['seconds']:.1f} s", flush=True)
    n_images = args.steps * args.batch
    summary = {}
    for method in METHODS:
        wall = paired_ratios([x["seconds"] for x in runs[method]], [x["seconds"] for x in runs["vanilla"]])
        cpu = paired_ratios([x["cpu_s"] for x in runs[method]], [x["cpu_s"] for x in runs["vanilla"]])
        summary[method] = {
            "images_per_s": median(n_images / x["seconds"] for x in runs[method]),
            "s_per_step": median(x["seconds"] for x in runs[method]) / args.steps,
            "cost_vs_vanilla": summarize_ratios(wall).to_dict(),
            "cost_vs_vanilla_cpu": summarize_ratios(cpu).to_dict(),
        }
    ca = summary["cadistill"]["cost_vs_vanilla"]["median"]
    result = {
        "student": f"ResNet-{student.depth}", "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "threads": args.threads, "machine": f"{platform.machine()} {os.cpu_count()} cpu", "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_avg_1min": os.getloadavg()[0],
        "protocol": __doc__.split("Protocol")[1].strip(), "spread_rule": SPREAD_RULE,
        "target": f"CaDistill epoch <= {TARGET}x Vanilla", "target_met": ca <= TARGET,
        "summary": summary, "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for method, s in summary.items():
        print(f"{method:>10}: {s['images_per_s']:6.1f} images/s, {s['s_per_step']:.2f} s/step, "
              f"cost vs Vanilla {s['cost_vs_vanilla']['verdict']}")
    print(f"target CaDistill <= {TARGET}x Vanilla: {'met' if ca <= TARGET else 'NOT met'} (median {ca:.2f}x)")


if __name__ == "__main__":
    main()
