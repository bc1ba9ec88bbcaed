"""What CLARID changes, factor by factor, on the shapes dataset (beyond the paper).

The paper says extraneous directions carry class-irrelevant content (background, co-occurring objects) and
that CFG, unlike CLARID, injects class-correlated background. Shapes know every factor of every image, so we
measure it instead of looking: for each method's output against its input,

- the class: the classifiers of chapter 2 on the output;
- the foreground colour: median colour inside the (eroded) input mask;
- the change inside vs outside the input's foreground (mean absolute pixel change);
- the background: a probe that reads the background family from a background-only view (the foreground's
  box greyed out, :func:`paperlib.data.background_only`), and a probe that reads the *class* from that view,
  the shortcut CFG is said to strengthen.

Per-pixel change is naturally larger on small, high-contrast objects, so every number is compared with the
control that removes as many random directions, not read in absolute terms.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from paperlib.cache import load_or_compute
from paperlib.classifiers import ClassifierConfig, load_or_train_classifier, predict
from paperlib.data import (
    DATASET_NAMES,
    ShapesData,
    background_only,
    backgrounds_challenge,
    fingerprint,
    foreground_box_mask,
    make_shapes,
)
from paperlib.metrics import two_standard_errors
from paperlib.progress import tqdm

BOX_MARGIN = 1
"""Margin of the greyed foreground box of the background-only view (pixels, at 16x16)."""


def _erode(masks: Tensor) -> Tensor:
    m = masks.float()[:, None]
    return (-nn.functional.max_pool2d(-m, 3, 1, 1))[:, 0] > 0.5


def foreground_color(images: Tensor, masks: Tensor) -> Tensor:
    """Median colour (in ``[0, 1]``) of each image inside its eroded foreground mask (the mask itself if
    erosion empties it).

    Args:
        images: ``[N, 3, H, W]`` uint8.
        masks: ``[N, H, W]`` bool.

    Returns:
        ``[N, 3]`` float.
    """
    inner = _erode(masks)
    inner = torch.where(inner.flatten(1).any(1)[:, None, None], inner, masks)
    out = []
    for img, m in zip(images.float() / 255, inner):
        out.append(img[:, m].median(dim=1).values)
    return torch.stack(out)


def pixel_change(before: Tensor, after: Tensor, masks: Tensor) -> dict[str, Tensor]:
    """Mean absolute change per image (``[0, 1]`` scale) inside and outside the foreground mask.

    Returns:
        ``{"inside": [N], "outside": [N]}``.
    """
    d = (after.float() - before.float()).abs().mean(1) / 255  # [N, H, W]
    m = masks.float()
    return {"inside": (d * m).sum((1, 2)) / m.sum((1, 2)).clamp(min=1),
            "outside": (d * (1 - m)).sum((1, 2)) / (1 - m).sum((1, 2)).clamp(min=1)}


class ObjectMaskNet(nn.Module):
    """A fully convolutional foreground segmenter for shapes images: four 3x3 convolutions (dilations 1, 2, 4,
    1: a 17-pixel receptive field, the whole of a 16x16 image) with batch norm and ReLU, then one logit per
    pixel. Input ``[N, 3, H, W]`` uint8 (scaled inside), output ``[N, H, W]`` logits."""

    def __init__(self, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for d in (1, 2, 4, 1):
            layers += [nn.Conv2d(c, width, 3, padding=d, dilation=d), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        self.net = nn.Sequential(*layers, nn.Conv2d(width, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.float() / 127.5 - 1)[:, 0]


MOVED_IOU = 0.5
"""An output's object counts as moved (or redrawn) when its IoU with the input's object is below this."""

MASK_PROBE_VERSION = 1
"""Bump when :func:`train_mask_probe`'s training changes its result."""


def largest_component(masks: Tensor) -> Tensor:
    """The largest 8-connected component of each mask (empty masks stay empty; at 16x16 a star's tips touch
    its body only at corners).

    Args:
        masks: ``[N, H, W]`` bool.

    Returns:
        ``[N, H, W]`` bool.
    """
    from scipy import ndimage

    out = torch.zeros_like(masks)
    for i, m in enumerate(masks.numpy()):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        if n:
            sizes = ndimage.sum_labels(m, lab, range(1, n + 1))
            out[i] = torch.from_numpy(lab == 1 + int(sizes.argmax()))
    return out


@torch.no_grad()
def object_masks(probe: nn.Module, images: Tensor, batch_size: int = 1024) -> Tensor:
    """The object each image shows, as :class:`ObjectMaskNet` segments it: pixels with a logit above 0, then
    their largest 8-connected component (a stray textured pixel does not grow the object's box).

    Args:
        probe: A trained :class:`ObjectMaskNet`.
        images: ``[N, 3, H, W]`` uint8.

    Returns:
        ``[N, H, W]`` bool.
    """
    probe.eval()
    logits = torch.cat([probe(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    return largest_component(logits > 0)


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of paired masks ``[N, H, W]`` (1 where both are empty); ``[N]`` float."""
    inter, union = (a & b).flatten(1).sum(1), (a | b).flatten(1).sum(1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter, dtype=torch.float))


def object_boxes(*masks: Tensor, margin: int = BOX_MARGIN) -> Tensor:
    """The union of each mask's bounding box (grown by ``margin``): ``[N, H, W]`` bool from masks ``[N, H, W]``."""
    if not masks:
        raise ValueError("object_boxes needs at least one mask")
    return torch.stack([foreground_box_mask(m, margin) for m in masks]).any(0)


class SharedBackground:
    """The background every method's output of an image is measured on: outside the input's object and the
    object each output shows (found by a :func:`train_mask_probe` probe), the same region for every method, so
    that a method that moves the object neither shows its silhouette to the background probes nor has its
    background measured on less of the image than the others.

    Args:
        input_masks: ``[N, H, W]`` bool, the inputs' objects.
        outputs: ``name -> [N, 3, H, W]`` uint8, every method's outputs of the same inputs.
        probe: A mask probe, or ``None`` (the input's object only, as before the probe existed).

    Attributes:
        found: ``name -> [N, H, W]`` the object found in each output (empty without a probe).
        objects: ``[N, H, W]`` the union of all objects (pixel changes are measured outside and inside it).
        boxes: ``[N, H, W]`` the union of their boxes (greyed in the background probes' views).
        visible: ``[N]`` share of each image the background probes see.
    """

    def __init__(self, input_masks: Tensor, outputs: Mapping[str, Tensor], probe: nn.Module | None = None):
        self.input_masks = input_masks
        self.found = {k: object_masks(probe, v) for k, v in outputs.items()} if probe is not None else {}
        masks = [input_masks, *self.found.values()]
        self.objects = torch.stack(masks).any(0)
        self.boxes = object_boxes(*masks)  # each object's box: not the one box around all of them
        self.visible = 1 - self.boxes.float().mean((1, 2))

    def view(self, images: Tensor, fill: int = 128) -> Tensor:
        """Background-only views of ``images`` (outputs of these inputs): the shared boxes greyed."""
        return images.masked_fill(self.boxes[:, None], fill)

    def iou(self, name: str) -> Tensor:
        """``[N]`` IoU of output ``name``'s object with the input's."""
        return mask_iou(self.found[name], self.input_masks)


def train_mask_probe(
    n: int, size: int, seed: int, epochs: int = 4, publish: bool = False, progress: bool = True,
) -> tuple[ObjectMaskNet, pd.DataFrame]:
    """An :class:`ObjectMaskNet` trained on a fresh shapes draw to find the object in an edited image, whose
    mask is unknown (an edit may move, grow or redraw it).

    Adam (lr 2e-3), per-pixel binary cross-entropy, batch 128, random horizontal flips, ``epochs`` passes over
    ``make_shapes(n, seed, size, bg_correlation=0)`` with the second half of it pasted on Mixed-Rand
    backgrounds: backgrounds independent of the class, and shapes on backgrounds of a similar hue, so that the
    probe finds a shape on any background (an edit may repaint it); cached as a ``mask_probe`` artifact.

    Returns:
        ``(probe, checks)``: ``checks`` has the mean IoU of :func:`object_masks` with the true masks and the
        pixel accuracy on a held-out draw with the book's class/background correlation and on its Mixed-Rand
        version (objects on other classes' backgrounds), with the number of ``images``.
    """
    config = {"n": n, "size": size, "seed": seed, "epochs": epochs, "width": 32, "lr": 2e-3, "batch_size": 128,
              "bg_correlation": 0.0, "mixed_rand": 0.5}

    data = make_shapes(n, seed, size, config["bg_correlation"])
    mixed = backgrounds_challenge(data, seed + 7)["mixed_rand"]
    cut = n - round(config["mixed_rand"] * n)  # the first images on their own backgrounds, the rest mixed
    images = torch.cat([data.images[:cut], mixed.images[cut:]])
    masks = torch.cat([data.masks[:cut], mixed.masks[cut:]])
    fp = fingerprint(images, masks.flatten(1).sum(1))  # the images, and each object's area

    def compute() -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = ObjectMaskNet(config["width"])
        opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
        bs = config["batch_size"]
        model.train()
        for _ in tqdm(range(epochs), desc="mask probe", disable=not progress):
            for idx in torch.randperm(n, generator=g).split(bs):
                x, m = images[idx], masks[idx].float()
                flip = torch.rand(len(idx), generator=g) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                m = torch.where(flip[:, None, None], m.flip(-1), m)
                loss = nn.functional.binary_cross_entropy_with_logits(model(x), m)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    tensors, _ = load_or_compute("mask_probe", config, compute, version=MASK_PROBE_VERSION, publish=publish,
                                 provenance={"data": fp}, how="execute chapter 5b (it trains in about a minute)")
    probe = ObjectMaskNet(config["width"])
    probe.load_state_dict(tensors)
    probe.eval()
    test = make_shapes(max(200, n // 5), seed + 1, size)
    rows = []
    for split, d in (("held-out", test), ("mixed_rand", backgrounds_challenge(test, seed + 2)["mixed_rand"])):
        found = object_masks(probe, d.images)
        rows.append({"split": split, "images": len(d), "IoU": mask_iou(found, d.masks).mean().item(),
                     "pixel accuracy": (found == d.masks).float().mean().item()})
    return probe, pd.DataFrame(rows)


def train_background_probes(
    n: int, size: int, seed: int, epochs: int = 10, bg_correlation: float = 0.9, publish: bool = False,
    progress: bool = True,
) -> tuple[dict[str, nn.Module], pd.DataFrame]:
    """Probes that read the background family and the class from background-only views.

    Trained on a fresh shapes draw (``seed``, disjoint from the CDM's data), with the class/background
    correlation of the training set. The class probe is checked on the Mixed-Rand split, where the background
    carries no class information: it must sit at chance there, or it reads the silhouette.

    Returns:
        ``({"bg_family": probe, "class_from_bg": probe}, checks)``: ``checks`` has the probes' accuracies on a
        held-out draw (original backgrounds and Mixed-Rand), with the number of ``images`` of each split.
    """
    train = make_shapes(n, seed, size, bg_correlation)
    test = make_shapes(max(200, n // 5), seed + 1, size, bg_correlation)
    mixed = backgrounds_challenge(test, seed + 2)["mixed_rand"]
    view = background_only(train.images, train.masks, BOX_MARGIN)
    probes, rows = {}, []
    for name, target in (("bg_family", "bg_family"), ("class_from_bg", "shape")):
        cfg = ClassifierConfig(arch="resnet", epochs=epochs, seed=seed, hflip=True)
        fp = f"bgprobe-{n}-{size}-{seed}-{bg_correlation}-{target}"
        probes[name], _ = load_or_train_classifier(cfg, view, train.factors[target], 10, fp, publish, progress)
        for split, d in (("held-out", test), ("mixed_rand", mixed)):
            pred = predict(probes[name], background_only(d.images, d.masks, BOX_MARGIN)).argmax(1)
            rows.append({"probe": name, "split": split, "images": len(pred),
                         "accuracy": (pred == d.factors[target]).float().mean().item()})
    return probes, pd.DataFrame(rows)


def class_kept(outputs: dict[str, Tensor], labels: Tensor, classifiers: dict[str, nn.Module]) -> pd.DataFrame:
    """Whether each method's outputs still show the input's class, on any dataset (no masks needed).

    Args:
        outputs: ``method -> [N, 3, H, W] uint8`` images aligned with ``labels``.
        labels: ``[N]`` classes of the inputs.
        classifiers: Chapter 2's classifiers.

    Returns:
        One row per method: ``class kept`` (the classifiers' mean accuracy, as in :func:`factor_changes`),
        ``s.e.`` (its standard error over images, from each image's share of classifiers that are right) and
        one column per classifier.
    """
    if not classifiers:
        raise ValueError("classifiers must hold at least one classifier")
    rows = {}
    for name, out in outputs.items():
        if len(out) != len(labels):
            raise ValueError(f"{name}: {len(out)} outputs for {len(labels)} labels")
        correct = torch.stack([(predict(c, out).argmax(1) == labels).float() for c in classifiers.values()])
        per_image = correct.mean(0)
        se = per_image.std().item() / len(per_image) ** 0.5 if len(per_image) > 1 else float("nan")
        rows[name] = {"class kept": per_image.mean().item(), "s.e.": se,
                      **{arch: c.mean().item() for arch, c in zip(classifiers, correct)}}
    return pd.DataFrame(rows).T


def _kept_outcome(table: pd.DataFrame, method: str, reference: str, control: str) -> tuple[str, float, bool]:
    """``(outcome, gap, below_control)``: ``method`` keeps the class as often as ``reference`` ("keeps", gap
    within two s.e.), or "loses" / "adds" class evidence; ``below_control``: below the random control too."""
    kept, se = table["class kept"], table["s.e."]
    gap = kept[method] - kept[reference]
    noise = two_standard_errors(se[method], se[reference])
    outcome = "keeps" if abs(gap) <= noise else "loses" if gap < 0 else "adds"
    return outcome, gap, bool(kept[method] < kept[control] - noise)


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def class_kept_summary(tables: Mapping[str, pd.DataFrame], method: str = "CLARID", reference: str = "original",
                       control: str = "random dirs") -> str:
    """One sentence over datasets on whether ``method`` keeps the class as often as ``reference`` (a gap beyond
    two standard errors counts), e.g. "CLARID loses class evidence: on shapes 14 points and on CIFAR-10 21
    points fewer of its outputs are recognised than of the originals, and on both fewer than after removing
    as many random directions."

    Args:
        tables: ``dataset id -> class_kept table`` (``class kept`` and ``s.e.`` per method).
        method, reference, control: Row names compared (the control is the random-direction one).
    """
    if not tables:
        raise ValueError("tables must hold at least one dataset")
    outcomes = {ds: _kept_outcome(t, method, reference, control) for ds, t in tables.items()}
    clauses = []
    for outcome in ("loses", "adds", "keeps"):
        group = [ds for ds, o in outcomes.items() if o[0] == outcome]
        if not group:
            continue
        if outcome == "keeps":
            clauses.append(f"on {_and([DATASET_NAMES.get(d, d) for d in group])} {method} keeps the class as "
                           "often as the originals carry it (within two standard errors)")
            continue
        gaps = _and([f"on {DATASET_NAMES.get(d, d)} {abs(100 * outcomes[d][1]):.0f} points" for d in group])
        clause = (f"{method} {'loses' if outcome == 'loses' else 'adds'} class evidence: {gaps} "
                  f"{'fewer' if outcome == 'loses' else 'more'} of its outputs are recognised than of the originals")
        below = [d for d in group if outcomes[d][2]]
        if below:
            where = ("on both" if len(group) == 2 else "on all") if len(below) == len(group) > 1 else (
                "" if len(group) == 1 else "on " + _and([DATASET_NAMES.get(d, d) for d in below]))
            clause += f", and {where + ' ' if where else ''}fewer than after removing as many random directions"
        clauses.append(clause)
    text = "; ".join(clauses)
    return text[0].upper() + text[1:] + "."


PAINT_MARGIN = 0.05
"""How far above the references' it must rise, on random-background inputs, to count as painted."""


def share_se(share: float, n: int) -> float:
    """Standard error over ``n`` images of a share of images for which something holds (each image 0 or 1):
    ``sqrt(p (1 - p) / (n - 1))``, the sample standard deviation of the 0/1 values over ``sqrt(n)``."""
    if n < 2:
        raise ValueError(f"need at least 2 images, got {n}")
    return (share * (1 - share) / (n - 1)) ** 0.5


def class_from_bg_gap(m: pd.Series, reference: pd.Series, n: int) -> tuple[float, float]:
    """``(gap, noise)``: how far the class-from-background accuracy of ``m``'s outputs lies above
    ``reference``'s (negative: below), and two standard errors of that gap over the ``n`` images."""
    col = "class from bg"
    noise = two_standard_errors(share_se(m[col], n), share_se(reference[col], n))
    return m[col] - reference[col], noise


def _paints_class(m: pd.Series, *references: pd.Series) -> bool:
    col = "class from bg (random bg)"
    return m[col] > max(r[col] for r in references) + PAINT_MARGIN


def class_kept_claim(table: pd.DataFrame, method: str = "CLARID", reference: str = "original") -> str:
    """Verdict on Fig. 6's claim that Canonical Samples keep the class: "holds" unless ``method``'s outputs
    are recognised less often than ``reference``'s by more than two standard errors ("does not")."""
    kept, se = table["class kept"], table["s.e."]
    return "does not" if kept[method] - kept[reference] < -two_standard_errors(se[method], se[reference]) else "holds"


def background_claim(table: pd.DataFrame, n: int, method: str = "CLARID", reference: str = "original") -> str:
    """Verdict on Fig. 6's claim that CLARID removes class-correlated background (:func:`factor_changes`'s
    table over ``n`` images): "holds" if the class-from-background probe reads the input's class from
    ``method``'s outputs less often than from ``reference``'s by more than two standard errors of the gap
    (:func:`class_from_bg_gap`), else "does not". Changing the background more than random directions do is
    not enough: a changed background can carry the class as well as the original did."""
    gap, noise = class_from_bg_gap(table.loc[method].astype(float), table.loc[reference].astype(float), n)
    return "holds" if gap < -noise else "does not"


def paints_claim(table: pd.DataFrame, method: str, reference: str = "original") -> str:
    """Verdict on Fig. 6's claim that CFG injects class-correlated background: on inputs on another class's
    background, ``method``'s outputs show the input's class from the background more than
    :data:`PAINT_MARGIN` above ``reference``'s ("holds"), else "does not"."""
    m, r = (table.loc[row].astype(float) for row in (method, reference))
    return "holds" if _paints_class(m, r) else "does not"


def factor_verdict(table: pd.DataFrame, n: int, method: str = "CLARID", control: str = "random dirs",
                   reference: str = "original") -> str:
    """One sentence from :func:`factor_changes`'s table: how ``method`` changes the background against the
    random-direction ``control``, and whether the class can still be read from, or is painted into, it.

    Reading: over the ``n`` images, less or more often than from the originals' by more than two standard
    errors of the gap (:func:`class_from_bg_gap`), else "about as often as". Painting: on inputs on another
    class's background, the class-from-background probe reads the input's class from ``method``'s outputs
    more than :data:`PAINT_MARGIN` above both the inputs and the control.
    """
    m, c, r = (table.loc[row].astype(float) for row in (method, control, reference))
    out, ratio, bg, rand = "change outside fg", "inside / outside", "class from bg", "class from bg (random bg)"
    gap, noise = class_from_bg_gap(m, r, n)
    read, within = (("less often than", "") if gap < -noise else ("more often than", "") if gap > noise
                    else ("about as often as", ", within two standard errors"))
    paint = ("paints class-typical background, as CFG is said to" if _paints_class(m, r, c)
             else "does not paint class-typical background")
    return "; ".join([
        f"{method} changes the background {'more' if m[out] > c[out] else 'less'} than removing as many random "
        f"directions ({m[out]:.3f} vs {c[out]:.3f})",
        f"its change is {'more' if m[ratio] < c[ratio] else 'less'} concentrated on the background than the random "
        f"control's (inside/outside ratio {m[ratio]:.2f} vs {c[ratio]:.2f})",
        f"the class is read from its backgrounds {read} from the originals' ({m[bg]:.2f} vs {r[bg]:.2f}{within})",
        f"and on inputs whose background belongs to another class, {method}'s backgrounds show the input's class "
        f"{m[rand]:.2f} of the time against {r[rand]:.2f} for the originals and {c[rand]:.2f} for the random "
        f"control: {method} {paint}",
    ]) + "."


def factor_changes(
    inputs: ShapesData,
    outputs: dict[str, Tensor],
    classifiers: dict[str, nn.Module],
    probes: dict[str, nn.Module],
) -> pd.DataFrame:
    """Per method, what changed between each input and its output (means over images).

    Args:
        inputs: The CLARID run's input images with masks and factors.
        outputs: ``method -> [N, 3, H, W] uint8`` outputs aligned with ``inputs``.
        classifiers: Chapter 2's classifiers (class kept = mean accuracy of the three).
        probes: From :func:`train_background_probes`; with a ``"mask"`` entry (:func:`train_mask_probe`) the
            object each output shows is found: its colour is read there, and every method's background is the
            same region, outside the input's object and all outputs' (:class:`SharedBackground`).

    Returns:
        One row per method: ``class kept``, ``Δ fg colour``, ``change inside fg``, ``change outside fg``,
        ``inside / outside`` (NaN when nothing changed outside), ``bg family kept``, ``class from bg`` (all
        images), ``class from bg (own bg)`` (inputs on their class's own background family) and ``class from
        bg (random bg)`` (the others); with a mask probe also ``object moved`` (share of outputs whose object's
        IoU with the input's is below :data:`MOVED_IOU`: moved, redrawn or lost) and ``bg visible`` (share of
        the image the background probes see, the same for every method). Pixel values on a 0-1 scale.
    """
    fg_in = foreground_color(inputs.images, inputs.masks)
    own = inputs.factors["bg_family"] == inputs.labels
    everything = {"original": inputs.images, **outputs}
    shared = SharedBackground(inputs.masks, everything, probes.get("mask"))
    rows = {}
    for name, out in everything.items():
        extra, where = {}, inputs.masks  # where the output's object is read
        if shared.found:
            found = shared.found[name]
            where = torch.where(found.flatten(1).any(1)[:, None, None], found, inputs.masks)
            extra = {"object moved": (shared.iou(name) < MOVED_IOU).float().mean().item(),
                     "bg visible": shared.visible.mean().item()}
        view = shared.view(out)
        cls = torch.stack([(predict(c, out).argmax(1) == inputs.labels).float() for c in classifiers.values()])
        bg_fam = predict(probes["bg_family"], view).argmax(1) == inputs.factors["bg_family"]
        cls_bg = predict(probes["class_from_bg"], view).argmax(1) == inputs.labels
        change = pixel_change(inputs.images, out, shared.objects)
        rows[name] = {
            "class kept": cls.mean().item(),
            "Δ fg colour": (foreground_color(out, where) - fg_in).norm(dim=1).mean().item(),
            "change inside fg": change["inside"].mean().item(),
            "change outside fg": change["outside"].mean().item(),
            "inside / outside": (change["inside"].mean() / change["outside"].mean()).item()
            if change["outside"].mean() > 0 else float("nan"),  # an unchanged image: 0/0
            "bg family kept": bg_fam.float().mean().item(),
            "class from bg": cls_bg.float().mean().item(),
            "class from bg (own bg)": cls_bg[own].float().mean().item() if own.any() else float("nan"),
            "class from bg (random bg)": cls_bg[~own].float().mean().item() if (~own).any() else float("nan"),
            **extra,
        }
    return pd.DataFrame(rows).T


ABLATIONS: dict[str, dict] = {
    "chapter 3's CLARID": {},
    "layer down.1": {"layer": "down.1"},
    "layer up.1": {"layer": "up.1"},
    "t* - 200": {"t_star": -200},
    "t* + 200": {"t_star": +200},
    "K = 10": {"K": 10},
    "class-score Jacobian": {"jacobian": "class_score"},
}
"""Variants of CLARID compared factor by factor (ours). ``t_star`` values are offsets from the chosen t*."""


def clarid_ablation(
    cdm,
    base,
    inputs: ShapesData,
    indices: Tensor,
    classifiers: dict[str, nn.Module],
    probes: dict[str, nn.Module],
    variants: dict[str, dict] | None = None,
    publish: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """CLARID variants against their own random-direction controls on the same images, factor by factor.

    Each variant is :class:`paperlib.canonical.ClaridConfig` ``base`` with some fields replaced (``t_star``
    as an offset), run with :func:`paperlib.canonical.clarid_dataset` (cached, resumable) without the CFG
    and fixed-k decodes, and measured with :func:`factor_changes`.

    Args:
        cdm: A :class:`paperlib.train.BookCDM` of shapes.
        base: The chapters' CLARID configuration.
        inputs: ``cdm``'s training images at ``indices``, with masks and factors.
        indices: ``[M]`` rows of ``cdm``'s training set.
        classifiers: Chapter 2's classifiers.
        probes: From :func:`train_background_probes`.
        variants: Name -> overrides (default :data:`ABLATIONS`).
        publish: Save the runs into ``artifacts/``.
        progress: tqdm bars.

    Returns:
        One row per variant: ``t*``, ``k* (mean)``; ``class kept`` and the control's (``ctrl``); ``change
        outside / ctrl`` (the background change over the control's); ``inside / outside`` and the control's;
        the class-from-background probe on inputs on their class's own background (``own bg``: removing the
        background should lower it) and on a random one (``random bg``: painting class-typical background
        raises it), for CLARID, the control and the inputs; seconds per image.
    """
    if len(inputs.labels) != len(indices) or not torch.equal(inputs.labels, cdm.labels[indices]):
        raise ValueError("inputs must be cdm's training images at indices (labels differ)")
    rows = {}
    for name, cfg, run in variant_runs(cdm, base, indices, variants, publish, progress):
        t = factor_changes(inputs, {"CLARID": run["img.clarid"], "random": run["img.random"]}, classifiers, probes)
        ctrl_out = max(t.loc["random", "change outside fg"], 1e-8)
        rows[name] = {
            "t*": cfg.t_star, "k* (mean)": run["k_star"].float().mean().item(),
            "class kept": t.loc["CLARID", "class kept"], "class kept (ctrl)": t.loc["random", "class kept"],
            "Δ fg colour": t.loc["CLARID", "Δ fg colour"],
            "change outside / ctrl": t.loc["CLARID", "change outside fg"] / ctrl_out,
            "inside / outside": t.loc["CLARID", "inside / outside"],
            "inside / outside (ctrl)": t.loc["random", "inside / outside"],
            **{f"bg→class, {col}{who}": t.loc[row, f"class from bg ({col})"]
               for col in ("own bg", "random bg")
               for who, row in (("", "CLARID"), (" (ctrl)", "random"), (" (inputs)", "original"))},
            "s / image": run["seconds"].mean().item(),
        }
    return pd.DataFrame(rows).T


def variant_runs(cdm, base, indices: Tensor, variants: dict[str, dict] | None = None, publish: bool = False,
                 progress: bool = True) -> Iterator[tuple[str, object, dict[str, Tensor]]]:
    """CLARID run of each variant on ``cdm``'s training images at ``indices`` (cached, resumable).

    Each variant is :class:`paperlib.canonical.ClaridConfig` ``base`` with some fields replaced (``t_star`` as
    an offset), run with :func:`paperlib.canonical.clarid_dataset` without the CFG and fixed-k decodes.

    Yields:
        ``(name, cfg, run)`` per variant, in order.

    Raises:
        ValueError: for a variant whose t* is off the schedule.
    """
    from dataclasses import replace

    from paperlib.canonical import clarid_dataset

    for name, overrides in tqdm(list((variants or ABLATIONS).items()), desc="CLARID variants",
                                disable=not progress):
        o = dict(overrides)
        if "t_star" in o:
            o["t_star"] = base.t_star + o["t_star"]
            if not 0 < o["t_star"] <= len(cdm.alpha_bar) - 1:
                raise ValueError(f"variant {name!r}: t* = {o['t_star']} is off the schedule")
        cfg = replace(base, cfg_scales=(), fixed_ks=(), **o)
        run, _ = clarid_dataset(cdm.model, cdm.manifest["key"], cdm.images, cdm.labels, indices, cdm.alpha_bar,
                                cfg, publish=publish, progress=progress)
        yield name, cfg, run


def class_kept_ablation(
    cdm,
    base,
    indices: Tensor,
    classifiers: dict[str, nn.Module],
    variants: dict[str, dict] | None = None,
    publish: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """CLARID variants against their own random-direction controls, by the one factor every dataset has: is
    the class kept? (:func:`class_kept`; the CIFAR-10 counterpart of :func:`clarid_ablation`.)

    Args:
        cdm: A :class:`paperlib.train.BookCDM`.
        base: The chapters' CLARID configuration.
        indices: ``[M]`` rows of ``cdm``'s training set.
        classifiers: Chapter 2's classifiers.
        variants: Name -> overrides (default :data:`ABLATIONS`).
        publish: Save the runs into ``artifacts/``.
        progress: tqdm bars.

    Returns:
        One row per variant: ``t*``, ``k* (mean)``, ``class kept`` and its ``s.e.``, the same for the control
        (``ctrl``), the inputs' ``class kept (inputs)``, and seconds per image.
    """
    labels = cdm.labels[indices]
    inputs = class_kept({"inputs": cdm.images[indices]}, labels, classifiers).loc["inputs", "class kept"]
    rows = {}
    for name, cfg, run in variant_runs(cdm, base, indices, variants, publish, progress):
        t = class_kept({"CLARID": run["img.clarid"], "random": run["img.random"]}, labels, classifiers)
        rows[name] = {"t*": cfg.t_star, "k* (mean)": run["k_star"].float().mean().item(),
                      "class kept": t.loc["CLARID", "class kept"], "s.e.": t.loc["CLARID", "s.e."],
                      "class kept (ctrl)": t.loc["random", "class kept"], "s.e. (ctrl)": t.loc["random", "s.e."],
                      "class kept (inputs)": inputs, "s / image": run["seconds"].mean().item()}
    return pd.DataFrame(rows).T


def ablation_variants(t_star: int, T: int = 1000, names: list[str] | None = None) -> dict[str, dict]:
    """:data:`ABLATIONS` (those in ``names``, default all) whose ``t*`` (the chosen ``t_star`` plus the
    variant's offset) lies in ``1..T``.

    Raises:
        ValueError: for a name not in :data:`ABLATIONS`.
    """
    unknown = sorted(set(names or []) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"ablation names must be among {list(ABLATIONS)}, got {unknown}")
    return {n: o for n, o in ABLATIONS.items()
            if (names is None or n in names) and 0 < t_star + o.get("t_star", 0) <= T}


def ablation_subset(data: ShapesData, n: int, seed: int = 0) -> Tensor:
    """``n`` rows of ``data``, half on their class's own background family and half on another one (as far
    as there are), each half class-stratified: both background probes of :func:`clarid_ablation` need support.

    Returns:
        ``[<= n]`` sorted row indices.
    """
    from paperlib.data import stratified_subset

    own = torch.nonzero(data.factors["bg_family"] == data.labels)[:, 0]
    other = torch.nonzero(data.factors["bg_family"] != data.labels)[:, 0]
    n_other = min(len(other), n // 2)
    parts = [g[stratified_subset(data.labels[g], n=m, seed=seed)] for g, m in ((other, n_other), (own, n - n_other))
             if m > 0]
    return torch.cat(parts).sort().values


def ablation_verdict(table: pd.DataFrame, margin: float = 0.05, keep: float = 0.8) -> str:
    """One sentence from :func:`clarid_ablation`'s table: which variants remove the class-correlated
    background, and which paint it.

    A variant *removes* it when, on own-background inputs, its outputs' class-from-background accuracy is more
    than ``margin`` below both the inputs' and its random control's while the class is kept (``>= keep``);
    it *paints* it when, on random-background inputs, that accuracy is more than ``margin`` above both.
    """
    own, rand = "bg→class, own bg", "bg→class, random bg"
    inp_own, inp_rand = float(table[f"{own} (inputs)"].iloc[0]), float(table[f"{rand} (inputs)"].iloc[0])
    removes = [str(n) for n, a in table.iterrows()
               if a[own] < min(inp_own, a[f"{own} (ctrl)"]) - margin and a["class kept"] >= keep]
    paints = [str(n) for n, a in table.iterrows() if a[rand] > max(inp_rand, a[f"{rand} (ctrl)"]) + margin]
    first = (f"Removing the background shortcut (class read from the background of own-background inputs "
             f"more than {margin:.2f} below the inputs' {inp_own:.2f} and the random control's, class kept "
             f"≥ {keep:.2f}): " + (", ".join(removes) if removes else "no variant") + ".")
    second = (f" Painting class-typical background onto random-background inputs (more than {margin:.2f} above "
              f"the inputs' {inp_rand:.2f} and the control's): " + (", ".join(paints) if paints else "no variant")
              + ".")
    return first + second


def class_kept_ablation_verdict(table: pd.DataFrame) -> str:
    """One sentence from :func:`class_kept_ablation`'s table: which variants keep the class as often as the
    inputs carry it, and which keep it better than their random control (gaps beyond two standard errors).
    """
    inputs = float(table["class kept (inputs)"].iloc[0])
    as_inputs = [str(n) for n, a in table.iterrows() if a["class kept"] >= inputs - 2 * a["s.e."]]
    gap = table["class kept"] - table["class kept (ctrl)"]
    noise = pd.Series({n: two_standard_errors(a["s.e."], a["s.e. (ctrl)"]) for n, a in table.iterrows()})
    above_ctrl = [str(n) for n in table.index if gap[n] > noise[n]]
    below_ctrl = [str(n) for n in table.index if gap[n] < -noise[n]]
    return (f"Keeping the class as often as the inputs carry it ({inputs:.2f}, within two standard errors): "
            + (", ".join(as_inputs) if as_inputs else "no variant")
            + ". Keeping it better than removing as many random directions: "
            + (", ".join(above_ctrl) if above_ctrl else "no variant")
            + "; worse: " + (", ".join(below_ctrl) if below_ctrl else "no variant") + ".")


# ----------------------------------------------------------------------------------------------------------
# The chapter's tables as a reader sees them (chapter 5)
# ----------------------------------------------------------------------------------------------------------

def fixed(table: pd.DataFrame, digits: int = 3, integers: Sequence = (), na: str = "—") -> pd.DataFrame:
    """``table`` as text for display: every number with ``digits`` decimals, the columns ``integers`` as
    integers, NaN as ``na``, text as it is (a DataFrame's own display picks the decimals column by column)."""
    def fmt(col, x) -> str:
        if isinstance(x, str):
            return x
        if pd.isna(x):
            return na
        return f"{round(float(x))}" if col in integers else f"{float(x):.{digits}f}"

    out = table.astype(object).copy()
    for col in table.columns:
        out[col] = [fmt(col, x) for x in table[col]]
    return out


def versus_chance(accuracy: float, n: int, n_classes: int) -> str:
    """How an accuracy over ``n`` images compares with chance (``1 / n_classes``): "at chance" within two
    standard errors (:func:`share_se`), else how many points above or below it."""
    chance, se = 1 / n_classes, share_se(accuracy, n)
    gap = accuracy - chance
    if abs(gap) <= 2 * se:
        return "at chance (within two standard errors)"
    return f"{abs(100 * gap):.1f} points {'above' if gap > 0 else 'below'} chance (more than two standard errors)"


PROBE_NAMES: dict[str, str] = {"bg_family": "background family", "class_from_bg": "class from background"}
SPLIT_NAMES: dict[str, str] = {"held-out": "held-out draw", "mixed_rand": "Mixed-Rand backgrounds"}


def probe_checks_display(checks: pd.DataFrame) -> pd.DataFrame:
    """:func:`train_background_probes`'s checks as a table: probe × split accuracies, reader names, 3 decimals."""
    acc = checks.pivot(index="probe", columns="split", values="accuracy")
    acc = acc.rename(index=PROBE_NAMES, columns=SPLIT_NAMES)
    acc.index.name, acc.columns.name = "probe", "accuracy on"
    return fixed(acc, 3)


def ablation_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`clarid_ablation`'s table as shown, narrow enough for the page: each measure beside its random
    control's (two-level columns); left out are the inputs' background readings (the same for every variant:
    say them in the caption) and the inside / outside ratios; t* as an integer, every other number with 2
    decimals."""
    cols: dict[tuple[str, str], pd.Series] = {("t*", ""): table["t*"], ("mean k*", ""): table["k* (mean)"]}
    for col in ("class kept", "bg→class, own bg", "bg→class, random bg"):
        cols[(col, "CLARID")] = table[col]
        cols[(col, "ctrl")] = table[f"{col} (ctrl)"]
    for col in ("change outside / ctrl", "Δ fg colour", "s / image"):
        cols[(col, "")] = table[col]
    out = pd.DataFrame(cols, index=table.index)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    out.index.name = "variant"
    return fixed(out, 2, integers=[("t*", "")])


def ablation_class_display(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """:func:`class_kept_ablation`'s tables (``dataset id -> table``) as one: ``class kept ± s.e.`` for each
    variant and its random control, t* as an integer, 2 decimals; the inputs' value (the same for every
    variant) is left for the caption."""
    parts = {}
    for ds, t in tables.items():
        parts[DATASET_NAMES.get(ds, ds)] = pd.DataFrame({
            "t*": [f"{round(float(x))}" for x in t["t*"]],
            "mean k*": [f"{float(x):.2f}" for x in t["k* (mean)"]],
            "class kept, CLARID": [f"{float(a):.2f} ± {float(b):.2f}" for a, b in zip(t["class kept"], t["s.e."])],
            "class kept, ctrl": [f"{float(a):.2f} ± {float(b):.2f}"
                                 for a, b in zip(t["class kept (ctrl)"], t["s.e. (ctrl)"])],
            "s / image": [f"{float(x):.2f}" for x in t["s / image"]],
        }, index=t.index)
    return pd.concat(parts, names=["dataset", "variant"])
