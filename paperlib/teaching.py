"""The teaching bank: what a student is taught from (paper §4, spec §8.1 and §8.7).

A :class:`TeachingBank` holds, for ``M`` entries, the frozen teacher's contribution to distillation. Each
entry comes from one seed image of the training set (``indices``), and carries its class (``labels``) and its
teacher features. It is **pre-computed**: no CDM forward pass happens during training.

=============  =============================================  ===========================================
``kind``       entries                                         used by
=============  =============================================  ===========================================
``"clarid"``   the CLAReps of a class-stratified subset (the  CaDistill (Eq. 6): ``images`` are the
               paper: 10% of the training set), decoded to    Canonical Samples, ``features`` their
               Canonical Samples                              Canonical Features
``"cfg"``      the same inverted latents decoded with CFG     CFGDistill: the CaDistill framework with
               (scale ``w``) and no projection                 the CFG outputs in place of the CLAReps
``"raw"``      every training image, one to one               DMDistill: the raw CDM feature of each
               (``indices = 0..N-1`` in any order, no         training image (the student sees the
               ``images``)                                    training image itself)
=============  =============================================  ===========================================

Format (the fields of :class:`TeachingBank`; ``M`` entries, teacher feature width ``d``):

- ``kind``, ``dataset``: as above; ``dataset`` is a :data:`paperlib.data.DATASETS` name;
- ``labels`` ``[M]`` int64: each entry's class, the class of its seed image;
- ``indices`` ``[M]`` int64: the seed image's row in the training set (unique); input-matched pairing and
  DMDistill's one-to-one matching look entries up by it;
- ``features`` ``[M, d]`` float32: ``avgpool f_{l_f,t_f}`` under the class condition (spec §3.7, the
  paper's Canonical Features);
- ``images`` ``[M, 3, H, W]`` uint8 or ``None`` (``"raw"``): the images the student sees beside its
  training images (Canonical Samples, CFG outputs);
- ``features_null`` ``[M, d0]`` float32 or ``None``: the same under the null class (ours: features that see
  only the image; the null-class control of chapter 6);
- ``meta``: JSON-able provenance, at least ``cdm`` (the CDM's artifact key) and ``data`` (the fingerprint of
  the training set that ``indices`` index, :func:`paperlib.data.fingerprint`); the builders here also record
  ``feature`` / ``feature_null`` (``layer``, ``t``, ``num_steps``, ``condition``), ``clarid`` (the
  :class:`paperlib.canonical.ClaridConfig`), ``guidance_scale`` (the CFG scale the images were decoded with)
  and ``sources`` (keys of the artifacts the bank was read from).

:func:`save_bank` writes a bank as one artifact of stage ``teaching_bank`` (:mod:`paperlib.cache`: tensors
``labels``, ``indices``, ``features`` and, when present, ``images`` and ``features_null``; manifest with the
config, ``data`` provenance, ``n``, the bank's :meth:`~TeachingBank.fingerprint` and the ``meta``);
:func:`load_bank` reads it back, checked. The key hashes ``kind``, ``dataset``, ``meta`` and the fingerprint,
so a bank with other content never overwrites another.

Where the chapters' banks come from (:func:`book_bank`):

1. a bank recorded as the choice ``teaching_bank_<kind>`` of the profile and dataset (its key, see
   :func:`record_bank`). This is how a re-cache is published (issue 13 item 7, e.g. more CIFAR-10 CLAReps
   decoded with CFG at ``w = 3``): build a :class:`TeachingBank`, ``save_bank(bank, publish=True)``, then
   ``record_bank("full", dataset, bank)``;
2. otherwise today's caches (:func:`bank_from_caches`): chapter 3's recorded CLARID run (``img.clarid``,
   ``img.cfg<w>``) and chapter 5's Canonical Features under the class condition at chapter 4's
   ``(feature_layer, feature_t)`` and under the null class at ``(feature_layer_null, feature_t_null)``;
   for ``"raw"``, the features of every training image at ``(feature_layer, feature_t)``, computed once
   with the CDM in resumable chunks (:func:`raw_feature_bank`) and cached as an artifact of stage
   ``raw_features`` (the features alone: entry ``i`` is training image ``i``; committed with the full profile).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from paperlib.cache import (
    artifact_exists,
    artifact_path,
    config_key,
    load_artifact,
    load_or_compute_chunked,
    save_artifact,
    tensors_sha256,
)
from paperlib.data import DATASETS
from paperlib.paths import ARTIFACTS_DIR, cache_dir
from paperlib.validate import check_tensor, describe

log = logging.getLogger(__name__)

__all__ = [
    "BANK_KINDS",
    "FEATURE_NUM_STEPS",
    "TeachingBank",
    "bank_from_caches",
    "book_bank",
    "load_bank",
    "raw_feature_bank",
    "record_bank",
    "save_bank",
]

BANK_KINDS: tuple[str, ...] = ("clarid", "cfg", "raw")
"""What a bank's entries are: Canonical Samples, CFG outputs, or the training images themselves."""

STAGE = "teaching_bank"
STAGE_VERSION = 1

FEATURE_NUM_STEPS: dict[str, int] = {"full": 100, "smoke": 10}
"""DDIM grid of the feature inversions per profile (chapters 4–5's ``NUM_STEPS``)."""


@dataclass(frozen=True, eq=False)
class TeachingBank:
    """Pre-computed teacher outputs a student is taught from (the format is in the module docstring).

    Raises:
        ValueError: On construction, if a field has the wrong kind, dtype or shape, the rows disagree,
            ``indices`` repeat, ``images`` is missing for a ``"clarid"``/``"cfg"`` bank, or ``meta`` lacks
            ``cdm``/``data``.
    """

    kind: str
    dataset: str
    labels: Tensor
    indices: Tensor
    features: Tensor
    images: Tensor | None = None
    features_null: Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in BANK_KINDS:
            raise ValueError(f"kind must be one of {BANK_KINDS}, got {self.kind!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        check_tensor("labels", self.labels, ndim=1, dtype=torch.int64, nonempty=True)
        m = len(self.labels)
        if self.labels.min() < 0:
            raise ValueError("labels must be >= 0")
        check_tensor("indices", self.indices, ndim=1, dtype=torch.int64)
        if len(self.indices) != m or self.indices.min() < 0 or len(torch.unique(self.indices)) != m:
            raise ValueError(f"indices must be {m} distinct training-set rows >= 0, got {describe(self.indices)}")
        for name in ("features", "features_null"):
            f = getattr(self, name)
            if f is None and name == "features_null":
                continue
            check_tensor(name, f, ndim=2, dtype=torch.float32, finite=True)
            if len(f) != m:
                raise ValueError(f"{name} must have {m} rows (one per entry), got {tuple(f.shape)}")
        if self.kind == "raw":
            if self.images is not None:
                raise ValueError("a 'raw' bank holds no images (the student sees the training images themselves)")
        else:
            check_tensor("images", self.images, ndim=4, dtype=torch.uint8)
            if len(self.images) != m or self.images.shape[1] != 3:
                raise ValueError(f"images must have shape [{m}, 3, H, W], got {describe(self.images)}")
        if not isinstance(self.meta, dict) or not all(isinstance(self.meta.get(k), str) for k in ("cdm", "data")):
            raise ValueError(f"meta must be a dict with the str fields 'cdm' and 'data', got {self.meta!r}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def data(self) -> str:
        """Fingerprint of the training set that :attr:`indices` index."""
        return self.meta["data"]

    def tensors(self) -> dict[str, Tensor]:
        """The bank's tensors by name (``images`` and ``features_null`` only when present)."""
        out = {"labels": self.labels, "indices": self.indices, "features": self.features}
        if self.images is not None:
            out["images"] = self.images
        if self.features_null is not None:
            out["features_null"] = self.features_null
        return out

    def fingerprint(self, condition: str | None = None) -> str:
        """16 hex characters hashing the bank's tensors: identifies the teaching data.

        Args:
            condition: ``None``: every tensor (the bank file's identity). ``"class"`` or ``"null"``: what a
                student of that condition reads, leaving out the other condition's features, so a student's
                key does not change when only the features it never reads do.
        """
        if condition not in (None, "class", "null"):
            raise ValueError(f"condition must be None, 'class' or 'null', got {condition!r}")
        t = self.tensors()
        if condition == "class":
            t.pop("features_null", None)
        elif condition == "null":
            t.pop("features")
        return tensors_sha256(t)[:16]

    def rows_of(self, train_indices: Tensor, n_train: int) -> Tensor:
        """Each training-set row's entry in the bank, ``-1`` where it has none.

        Args:
            train_indices: ``[B]`` int64 rows of the training set (e.g. a shuffled minibatch's).
            n_train: Training set size (the bank's ``indices`` must lie below it).

        Returns:
            ``[B]`` int64 bank rows, ``-1`` for training images without an entry.
        """
        return self.row_table(n_train)[train_indices]

    def row_table(self, n_train: int) -> Tensor:
        """``[n_train]`` int64: the bank row of every training-set row (``-1``: none); see :meth:`rows_of`."""
        if self.indices.max() >= n_train:
            raise ValueError(f"the bank indexes rows up to {int(self.indices.max())}, but the training set has "
                             f"{n_train}: it was made for other data")
        table = torch.full((n_train,), -1, dtype=torch.int64)
        table[self.indices] = torch.arange(len(self))
        return table


def _bank_config(bank: TeachingBank) -> dict:
    return {"kind": bank.kind, "dataset": bank.dataset, "meta": bank.meta, "fingerprint": bank.fingerprint()}


def save_bank(bank: TeachingBank, publish: bool = False) -> tuple[Path, dict]:
    """Save a bank as a ``teaching_bank`` artifact (committed ``artifacts/`` with ``publish``).

    Returns:
        ``(path, manifest)``; ``manifest["key"]`` is the bank's key (:func:`load_bank`, :func:`record_bank`).
    """
    config = _bank_config(bank)
    key = config_key(config, STAGE_VERSION)
    path = artifact_path(STAGE, config, STAGE_VERSION, publish)
    manifest = {"stage": STAGE, "version": STAGE_VERSION, "key": key, "config": config, "data": bank.data,
                "kind": bank.kind, "dataset": bank.dataset, "n": len(bank), "fingerprint": config["fingerprint"],
                "feature_dim": bank.features.shape[1], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "torch": torch.__version__}
    return path, save_artifact(path, bank.tensors(), manifest)


def load_bank(key_or_path: str | Path, data_fingerprint: str | None = None) -> TeachingBank:
    """A bank saved by :func:`save_bank`, by key (committed artifacts first, then the cache) or path.

    Args:
        key_or_path: The manifest ``key`` or the ``.safetensors`` path.
        data_fingerprint: If given, must equal the bank's ``data`` (:class:`paperlib.cache.ProvenanceError`).
    """
    path = Path(key_or_path)
    if path.suffix != ".safetensors":
        candidates = [root / STAGE / f"{key_or_path}.safetensors" for root in (ARTIFACTS_DIR, cache_dir())]
        found = [p for p in candidates if artifact_exists(p)]
        if not found:
            raise FileNotFoundError(f"no teaching bank with key {key_or_path!r} in {[str(p) for p in candidates]}")
        path = found[0]
    expect = None if data_fingerprint is None else {"data": data_fingerprint}
    hint = "The bank indexes another training set than the one loaded here."
    tensors, manifest = load_artifact(path, expect=expect, hint=hint)
    c = manifest["config"]
    bank = TeachingBank(c["kind"], c["dataset"], tensors["labels"], tensors["indices"], tensors["features"],
                        tensors.get("images"), tensors.get("features_null"), c["meta"])
    if bank.fingerprint() != c["fingerprint"]:
        raise ValueError(f"{path}: the bank's tensors do not match its fingerprint")  # pragma: no cover
    return bank


def record_bank(profile: str, bank_or_key: TeachingBank | str, dataset: str | None = None,
                source: str = "teaching bank") -> str:
    """Make a saved bank the one :func:`book_bank` uses for its profile, dataset and kind.

    Args:
        profile: ``"full"`` records into the committed choices.
        bank_or_key: A saved :class:`TeachingBank` (its key is recomputed) or a key (then ``dataset`` is read
            from the artifact).
        dataset: Ignored for a bank (its own ``dataset`` is used).
        source: Who chose it (recorded beside the key).

    Returns:
        The key recorded.
    """
    from paperlib.selection import record_choice

    if isinstance(bank_or_key, TeachingBank):
        bank = bank_or_key
        key = config_key(_bank_config(bank), STAGE_VERSION)
    else:
        key, bank = bank_or_key, load_bank(bank_or_key)
    load_bank(key)  # it must be saved
    record_choice(profile, bank.dataset, f"teaching_bank_{bank.kind}", key, source)
    return key


def _feature_meta(layer: str, t: int, num_steps: int, condition: str) -> dict:
    return {"layer": layer, "t": int(t), "num_steps": int(num_steps), "condition": condition}


def bank_from_caches(cdm, profile: str, dataset: str, kind: str, num_steps: int | None = None,
                     progress: bool = True, max_seconds: float | None = None) -> TeachingBank:
    """The bank of ``kind`` built from today's caches (see the module docstring, item 2).

    ``"clarid"`` and ``"cfg"`` read chapter 3's recorded CLARID run and chapter 5's Canonical Features (both
    cached; computed if missing); ``"raw"`` computes or loads :func:`raw_feature_bank`.

    Args:
        cdm: The :class:`paperlib.train.BookCDM` of ``dataset``.
        profile: Profile whose recorded choices and caches are read.
        dataset: Dataset name.
        kind: One of :data:`BANK_KINDS`.
        num_steps: DDIM grid of the feature inversions (default :data:`FEATURE_NUM_STEPS` of the profile).
        progress: tqdm bars when something is computed.
        max_seconds: Budget of a ``"raw"`` computation (it resumes when called again).
    """
    from paperlib.canonical import book_clarid_run, canonical_features
    from paperlib.selection import load_choice

    if kind not in BANK_KINDS:
        raise ValueError(f"kind must be one of {BANK_KINDS}, got {kind!r}")
    num_steps = FEATURE_NUM_STEPS.get(profile, 100) if num_steps is None else num_steps
    l_f, t_f = load_choice(profile, dataset, "feature_layer"), load_choice(profile, dataset, "feature_t")
    if kind == "raw":
        return raw_feature_bank(cdm, dataset, l_f, t_f, num_steps, publish=profile == "full", progress=progress,
                                max_seconds=max_seconds)
    run, cfg = book_clarid_run(cdm, profile, dataset, progress=progress)
    # The null-condition control changes the condition alone: its features are taken at the same (l_f, t_f).
    l0, t0 = l_f, t_f
    publish = profile == "full"
    feats, m = canonical_features(cdm, run, cfg, l_f, t_f, num_steps, publish, progress)
    feats0, m0 = canonical_features(cdm, run, cfg, l0, t0, num_steps, publish, progress, condition="null")
    w = cfg.cfg_scales[0]
    column, images = ("canonical", run["img.clarid"]) if kind == "clarid" else ("cfg", run[f"img.cfg{w:g}"])
    meta = {"cdm": cdm.manifest["key"], "data": cdm.manifest["data"], "clarid": cfg.to_dict(),
            "guidance_scale": float(cfg.guidance_scale if kind == "clarid" else w),
            "feature": _feature_meta(l_f, t_f, num_steps, "class"), "feature_null": _feature_meta(l0, t0, num_steps,
                                                                                               "null"),
            "sources": {"canonical_features": m["key"], "canonical_features_null": m0["key"]}}
    return TeachingBank(kind, dataset, run["labels"].long(), run["indices"].long(), feats[column].float(), images,
                        feats0[column].float(), meta)


def raw_feature_bank(cdm, dataset: str, layer: str, t: int, num_steps: int = 100, chunk_size: int = 1000,
                     publish: bool = False, progress: bool = True, max_seconds: float | None = None) -> TeachingBank:
    """DMDistill's bank: ``avgpool f_{l,t}`` of **every** training image under its own class, one to one.

    Each image is DDIM-inverted to ``t`` under its label and featurised there
    (:func:`paperlib.features.image_features`, the rule of the Canonical Features), on the un-augmented image
    (spec §8.7 [O]: features of random crops cannot be pre-computed). Computed once in resumable chunks
    (:func:`paperlib.cache.load_or_compute_chunked`) and cached; entry ``i`` is training image ``i``.

    Args:
        cdm: The :class:`paperlib.train.BookCDM` (its ``images`` and ``labels`` are the training set).
        dataset: Dataset name.
        layer: Feature layer ``l_f``.
        t: Feature time ``t_f``.
        num_steps: DDIM grid of the inversion.
        chunk_size: Images per saved chunk.
        publish: Keep the artifact (and the chunks until then) in ``artifacts/``.
        progress: tqdm bar over chunks.
        max_seconds: Stop between chunks after this long (:class:`paperlib.cache.ComputeIncomplete`).
    """
    from paperlib.features import image_features

    images, labels = cdm.images, cdm.labels
    meta = {"cdm": cdm.manifest["key"], "data": cdm.manifest["data"],
            "feature": _feature_meta(layer, t, num_steps, "class")}
    config = {"kind": "raw", "dataset": dataset, "meta": meta}

    def chunk(start: int, stop: int) -> dict[str, Tensor]:
        return {"features": image_features(cdm.model, images[start:stop], labels[start:stop], cdm.alpha_bar, int(t),
                                           layer, num_steps, progress=False).float()}

    tensors, _ = load_or_compute_chunked(
        "raw_features", config, len(labels), chunk_size, chunk, version=STAGE_VERSION, publish=publish,
        verbose=progress, provenance={"data": cdm.manifest["data"]}, desc=f"CDM features of {len(labels)} images",
        max_seconds=max_seconds, how=f"make students DATASET={dataset} METHOD=dmdistill SEEDS=0")
    return TeachingBank("raw", dataset, labels.long(), torch.arange(len(labels)), tensors["features"], meta=meta)


def book_bank(cdm, profile: str, dataset: str, kind: str, progress: bool = True,
              max_seconds: float | None = None) -> TeachingBank:
    """The chapters' bank of ``kind``: the recorded one (:func:`record_bank`), else :func:`bank_from_caches`.

    Raises:
        ProvenanceError: A recorded bank indexes another training set than ``cdm``'s.
    """
    from paperlib.selection import load_choice

    try:
        key = load_choice(profile, dataset, f"teaching_bank_{kind}")
    except KeyError:
        return bank_from_caches(cdm, profile, dataset, kind, progress=progress, max_seconds=max_seconds)
    log.info("teaching bank %s of %s: recorded %s", kind, dataset, key)
    return load_bank(key, cdm.manifest["data"])
