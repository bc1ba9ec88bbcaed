"""Benchmark: one training step of each network the book trains, in PyTorch's default (NCHW, contiguous)
memory format against ``torch.channels_last`` (NHWC, the format the book builds them in since this
benchmark), on the CPU.

    python bench/channels_last_bench.py [--steps 3] [--repeats 4] [--threads 1]
                                        [--out bench/channels_last_results.json]

Networks (random weights, random inputs of the book's shapes; a step's cost does not depend on the values):
chapter 2's CIFAR-10 judges (:mod:`paperlib.classifiers`: v4 ResNet, v3 ConvNeXt, v3 ViT; batch 128, SGD or
AdamW), chapter 6's student (:mod:`paperlib.students`: ResNet-20, batch 128) and the CIFAR-10 CDM
(:mod:`paperlib.models`: the 1.1M-parameter diffusers ``UNet2DModel``, batch 64, the epsilon loss).

Protocol (the house method of ``bench/clarid_bench.py`` and :mod:`paperlib.benchstats`): every side of a network
keeps its own model and optimiser for the whole run, warmed up by one untimed step; in repeat ``r`` the two
formats run ``steps`` steps each, back to back, in an order rotated by ``r``, so a drift of the machine's speed
hits both alike. A network's cost is the set of *paired* ratios ``channels_last time / contiguous time`` of the
same repeat, CPU time (``process_time``) and wall time, reported as the median with min-max, IQR and the
number of pairs (never a mean of ratios), with the spread rule of :mod:`paperlib.benchstats`. The outputs of the
two formats on the same weights and input are compared (``max_abs_diff`` of the logits or the noise
prediction): a memory format reorders floating-point sums, as a thread count does, and changes nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import torch
from torch import nn

from paperlib.benchstats import SPREAD_RULE, paired_ratios, rotated_order, summarize_ratios
from paperlib.classifiers import make_classifier
from paperlib.models import ClassConditionalUNet
from paperlib.setup import channels_last
from paperlib.students import StudentConfig, make_student
from paperlib.train import cdm_recipe

FORMATS = ("contiguous", "channels_last")


def _networks() -> dict[str, tuple[Callable[[], nn.Module], int, str]]:
    """``name -> (builder, batch, optimiser)``."""
    cdm = cdm_recipe("cifar10", "full").cdm
    return {
        "judge resnet v4": (lambda: make_classifier("resnet", 10, 32, net="v4"), 128, "sgd"),
        "judge convnext v3": (lambda: make_classifier("convnext", 10, 32, net="v3"), 128, "adamw"),
        "judge vit v3": (lambda: make_classifier("vit", 10, 32, net="v3"), 128, "adamw"),
        "student resnet-20": (lambda: make_student(StudentConfig(), 10, 32), 128, "sgd"),
        "cdm unet cifar10": (lambda: ClassConditionalUNet(cdm), 64, "adamw"),
    }


def _inputs(name: str, batch: int) -> tuple:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=g)
    if name.startswith("cdm"):
        return (2 * x - 1, torch.randint(0, 1000, (batch,), generator=g), torch.randint(0, 11, (batch,), generator=g),
                torch.randn(batch, 3, 32, 32, generator=g))
    return x, torch.randint(0, 10, (batch,), generator=g)


def _loss(name: str, model: nn.Module, inputs: tuple) -> torch.Tensor:
    if name.startswith("cdm"):
        x_t, t, y, eps = inputs
        return (model(x_t, t, y) - eps).pow(2).mean()
    x, y = inputs
    return nn.functional.cross_entropy(model(x), y)


def _side(name: str, fmt: str, builder, batch: int, optimiser: str) -> Callable[[int], dict]:
    torch.manual_seed(0)
    model = builder().train()
    inputs = _inputs(name, batch)
    channels_last(model, on=fmt == "channels_last")
    if fmt == "channels_last":
        inputs = tuple(v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for v in inputs)
    opt = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if optimiser == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=1e-4))

    def run(steps: int) -> dict:
        tic, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            loss = _loss(name, model, inputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return {"seconds": time.perf_counter() - tic, "cpu_s": time.process_time() - cpu}

    run(1)  # warm-up
    return run


def _max_abs_diff(name: str, builder, batch: int) -> float:
    torch.manual_seed(0)
    model = channels_last(builder().eval(), on=False)
    inputs = _inputs(name, min(batch, 16))
    args = inputs[:3] if name.startswith("cdm") else inputs[:1]
    with torch.no_grad():
        a = model(*args)
        channels_last(model)
        b = model(*(v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for v in args))
    return float((a - b).abs().max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", default=None, help="network names (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("channels_last_results.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets = {k: v for k, v in _networks().items() if args.only is None or k in args.only}
    load = [os.getloadavg()[0]]
    summary, runs = {}, {}
    for name, (builder, batch, optimiser) in nets.items():
        sides = {fmt: _side(name, fmt, builder, batch, optimiser) for fmt in FORMATS}
        got: dict[str, list[dict]] = {fmt: [] for fmt in FORMATS}
        for r in range(args.repeats):
            for fmt in rotated_order(FORMATS, r):
                got[fmt].append({"repeat": r, **sides[fmt](args.steps)})
        cl, co = got["channels_last"], got["contiguous"]
        summary[name] = {
            "batch": batch,
            "s_per_step": {fmt: median(x["cpu_s"] for x in got[fmt]) / args.steps for fmt in FORMATS},
            "cost_cpu": summarize_ratios(paired_ratios([x["cpu_s"] for x in cl], [x["cpu_s"] for x in co])).to_dict(),
            "cost_wall": summarize_ratios(paired_ratios([x["seconds"] for x in cl],
                                                        [x["seconds"] for x in co])).to_dict(),
            "max_abs_diff": _max_abs_diff(name, builder, batch),
        }
        runs[name] = got
        print(f"{name:>18}: channels_last / contiguous, CPU time {summary[name]['cost_cpu']['verdict']}",
              flush=True)
    load.append(os.getloadavg()[0])
    result = {
        "steps": args.steps, "repeats": args.repeats, "threads": args.threads,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu", "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_avg_1min": {"start": load[0], "end": load[1]},
        "protocol": __doc__.split("Protocol")[1].strip(), "spread_rule": SPREAD_RULE,
        "summary": summary, "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
