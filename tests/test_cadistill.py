"""CaDistill and its baselines: pairing, each method's loss terms, resumable training, the saved students."""

import math
from dataclasses import replace

import pytest
import torch

from paperlib import cadistill
from paperlib.cache import ProvenanceError
from paperlib.cadistill import (
    METHODS,
    Pairing,
    StudentRecipe,
    TrainingIncomplete,
    distill_terms,
    load_or_train_student,
    lr_at,
    student_recipe,
    train_student,
)
from paperlib.checkpoint import BatchOrder
from paperlib.data import fingerprint
from paperlib.distill import DistillWeights, linear_cka
from paperlib.students import make_student
from paperlib.teaching import TeachingBank

N, C, S = 48, 4, 16


def _data():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(N) % C
    images = torch.randint(0, 256, (N, 3, S, S), generator=g, dtype=torch.uint8)
    for c in range(C):  # something to learn: a bright band whose row depends on the class
        images[labels == c, :, 4 * c: 4 * c + 4] = 250
    return images, labels


IMAGES, LABELS = _data()
META = {"cdm": "c" * 16, "data": fingerprint(IMAGES, LABELS)}
SUBSET = torch.arange(1, N, 3)  # 16 seed images, every class


def _bank(kind: str) -> TeachingBank:
    g = torch.Generator().manual_seed(1)
    if kind == "raw":  # entries in shuffled order: one-to-one must look them up by index
        order = torch.randperm(N, generator=g)
        return TeachingBank("raw", "shapes", LABELS[order], order, torch.randn(N, 6, generator=g), meta=META)
    canon = (255 - IMAGES[SUBSET]).contiguous()
    return TeachingBank(kind, "shapes", LABELS[SUBSET], SUBSET, torch.randn(len(SUBSET), 6, generator=g), canon,
                        torch.randn(len(SUBSET), 5, generator=g), META)


def _recipe(method, **kw):
    return student_recipe("shapes", method, "smoke", **{"batch_size": 8, "epochs": 2, **kw})


def _bank_of(method):
    kind = cadistill.BANK_OF_METHOD[method]
    return None if kind is None else _bank(kind)


# ----------------------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------------------


def test_random_pairing_draws_fresh_same_class_entries_deterministically():
    bank = _bank("clarid")
    pairing = Pairing(bank, LABELS, "random", C)
    idx = torch.arange(N)
    draws = [pairing.draw(idx, LABELS, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    for rows in draws:
        assert torch.equal(bank.labels[rows], LABELS)  # same class as the training image
    assert torch.equal(draws[0], draws[1])  # same seed, same draw
    assert not torch.equal(draws[0], draws[2])  # another seed, another draw
    # in training, every step's draw comes from its own (seed, epoch, step) generator: fresh at every step
    order = BatchOrder("per_step", 0, N)
    steps = [pairing.draw(idx, LABELS, order.generator(e, s)) for e, s in [(0, 0), (0, 1), (1, 0), (0, 0)]]
    assert torch.equal(steps[0], steps[3]) and len({tuple(r.tolist()) for r in steps[:3]}) == 3
    # uniform over the class's entries, with replacement: every entry of the class turns up, none other
    many = torch.stack([pairing.draw(torch.zeros(1000, dtype=torch.int64), torch.zeros(1000, dtype=torch.int64),
                                     torch.Generator().manual_seed(s)) for s in range(4)]).flatten()
    class0 = torch.nonzero(bank.labels == 0)[:, 0]
    counts = torch.bincount(many, minlength=len(bank))
    assert set(torch.nonzero(counts)[:, 0].tolist()) == set(class0.tolist())
    expected = len(many) / len(class0)
    assert ((counts[class0] - expected).abs() < 5 * math.sqrt(expected)).all()


def test_matched_pairing_gives_subset_images_their_own_entry():
    bank = _bank("clarid")
    pairing = Pairing(bank, LABELS, "matched", C)
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    rows = pairing.draw(idx, LABELS[idx], torch.Generator().manual_seed(0))
    in_subset = torch.isin(idx, SUBSET)
    assert torch.equal(bank.indices[rows[in_subset]], idx[in_subset])  # its own CLARep
    assert torch.equal(bank.labels[rows], LABELS[idx])  # the others: a same-class draw
    assert not torch.equal(bank.indices[rows[~in_subset]], idx[~in_subset])


def test_one_to_one_pairing_follows_the_images_through_shuffling():
    bank = _bank("raw")  # its entries are in a shuffled order
    pairing = Pairing(bank, LABELS, "one_to_one", C)
    for seed in range(3):
        idx = torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:10]
        rows = pairing.draw(idx, LABELS[idx], torch.Generator())
        assert torch.equal(bank.indices[rows], idx)
        features_of = {int(i): bank.features[r] for r, i in enumerate(bank.indices)}
        assert all(torch.equal(bank.features[r], features_of[int(i)]) for r, i in zip(rows, idx))


def test_pairing_refuses_banks_that_cannot_serve():
    bank = _bank("clarid")
    with pytest.raises(ValueError, match="other label"):
        Pairing(bank, (LABELS + 1) % C, "random", C)
    few = TeachingBank("clarid", "shapes", bank.labels[bank.labels != 2], bank.indices[bank.labels != 2],
                       bank.features[bank.labels != 2], bank.images[bank.labels != 2], None, META)
    with pytest.raises(ValueError, match=r"no entry of classes \[2\]"):
        Pairing(few, LABELS, "random", C)
    with pytest.raises(ValueError, match="one-to-one pairing needs an entry for every training image"):
        Pairing(bank, LABELS, "one_to_one", C)


# ----------------------------------------------------------------------------------------------------------
# Each method's loss
# ----------------------------------------------------------------------------------------------------------


def _terms(method, seed=0, **kw):
    recipe = _recipe(method, **kw)
    bank = _bank_of(method)
    model = make_student(recipe.student, C, S)
    pairing = None if bank is None else Pairing(bank, LABELS, cadistill._pairing_mode(recipe), C)
    idx = torch.arange(8, 16)
    terms, logits = distill_terms(model, recipe, IMAGES[idx], LABELS[idx], idx, torch.Generator().manual_seed(seed),
                                  bank, pairing)
    return recipe, terms, logits


@pytest.mark.parametrize("method", METHODS)
def test_each_method_has_exactly_its_terms(method):
    recipe, terms, logits = _terms(method)
    w = recipe.weights
    present = {"vanilla": {"ce"}, "dmdistill": {"ce", "cka"}, "cfgdistill": {"ce", "align", "sep", "cka"},
               "cadistill": {"ce", "align", "sep", "cka"}}[method]
    for name in ("ce", "align", "sep", "cka"):
        value = terms[name].item()
        assert (value > 0) == (name in present), (name, value)
        assert math.isfinite(value)
    total = terms["ce"] + w.align * terms["align"] + w.sep * terms["sep"] + w.cka * terms["cka"]
    torch.testing.assert_close(terms["loss"], total)
    assert logits.shape == (8, C)
    torch.testing.assert_close(terms["ce"], torch.nn.functional.cross_entropy(logits, LABELS[8:16]))
    if method == "dmdistill":  # one CKA term only (training images), at most 1
        assert terms["cka"].item() <= 1
    if method in ("cfgdistill", "cadistill"):  # two CKA terms (training images and bank images)
        assert terms["cka"].item() > 0


def test_each_role_is_played_by_the_right_images():
    """Eval mode, no augmentation: the terms equal Eq. 6 recomputed from the student's own outputs, with CE and
    the anchors on the training images and the drawn bank images as the Canonical Samples."""
    recipe = replace(_recipe("cadistill"), crop_padding=0, hflip=False)
    bank = _bank("clarid")
    model = make_student(recipe.student, C, S).eval()
    idx = torch.arange(8, 16)
    pairing = Pairing(bank, LABELS, "random", C)
    terms, logits = distill_terms(model, recipe, IMAGES[idx], LABELS[idx], idx, torch.Generator().manual_seed(3),
                                  bank, pairing)
    rows = pairing.draw(idx, LABELS[idx], torch.Generator().manual_seed(3))
    x, xc = IMAGES[idx].float() / 255, bank.images[rows].float() / 255
    want = cadistill.cadistill_loss(model(x), LABELS[idx], model.features(x), model.features(xc),
                                    bank.features[rows], recipe.weights)
    for name in ("ce", "align", "sep", "cka"):
        torch.testing.assert_close(terms[name], want[name])
    torch.testing.assert_close(logits, model(x))


def test_bank_images_leave_batch_norm_running_statistics_alone():
    """Train mode: the running statistics after a CaDistill step are those of a step on the training images
    alone (the Canonical Samples pass through batch norm without updating them)."""
    recipe = _recipe("cadistill")
    bank = _bank("clarid")
    idx = torch.arange(8, 16)
    model = make_student(recipe.student, C, S).train()
    alone = make_student(recipe.student, C, S).train()
    alone.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(0)
    distill_terms(model, recipe, IMAGES[idx], LABELS[idx], idx, g, bank, Pairing(bank, LABELS, "random", C))
    vanilla = replace(_recipe("vanilla"), crop_padding=0, hflip=False)
    plain = replace(recipe, crop_padding=0, hflip=False)
    m2 = make_student(recipe.student, C, S).train()
    m2.load_state_dict(alone.state_dict())
    distill_terms(m2, plain, IMAGES[idx], LABELS[idx], idx, torch.Generator(), bank,
                  Pairing(bank, LABELS, "random", C))
    distill_terms(alone, vanilla, IMAGES[idx], LABELS[idx], idx, torch.Generator())
    for (name, a), b in zip(m2.state_dict().items(), alone.state_dict().values()):
        if "running" in name or "num_batches" in name:
            torch.testing.assert_close(a, b, msg=name)
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_dmdistill_cka_uses_the_batch_images_own_features():
    recipe = _recipe("dmdistill")
    bank = _bank("raw")
    model = make_student(recipe.student, C, S).eval()
    idx = torch.tensor([5, 40, 2, 17, 33, 8, 29, 11])
    plain = replace(recipe, crop_padding=0, hflip=False)  # no augmentation: the student sees the images as stored
    terms, _ = distill_terms(model, plain, IMAGES[idx], LABELS[idx], idx, torch.Generator(), bank,
                             Pairing(bank, LABELS, "one_to_one", C))
    h = model.features(IMAGES[idx].float() / 255)
    own = bank.features[bank.row_table(N)[idx]]
    torch.testing.assert_close(terms["cka"], 1 - linear_cka(h, own))
    shuffled = bank.features[bank.row_table(N)[idx.flip(0)]]
    assert not torch.allclose(terms["cka"], 1 - linear_cka(h, shuffled))


def test_null_condition_uses_the_null_class_features():
    base = _terms("cadistill")[1]
    bank = _bank("clarid")
    const = TeachingBank("clarid", "shapes", bank.labels, bank.indices, bank.features, bank.images,
                         torch.ones(len(bank), 5), META)  # constant null features: CKA 0 on both terms
    recipe = _recipe("cadistill", condition="null")
    model = make_student(recipe.student, C, S)
    idx = torch.arange(8, 16)
    terms, _ = distill_terms(model, recipe, IMAGES[idx], LABELS[idx], idx, torch.Generator().manual_seed(0),
                             const, Pairing(const, LABELS, "random", C))
    torch.testing.assert_close(terms["cka"], torch.tensor(2.0))
    assert base["cka"].item() < 2
    torch.testing.assert_close(terms["align"], base["align"])  # the same draws and images otherwise


def test_recipe_key_holds_only_what_changes_the_student():
    a, b = _recipe("vanilla"), _recipe("vanilla", weights=DistillWeights(align=2.0), checkpoint_every=7)
    assert a.to_dict() == b.to_dict()
    dm = _recipe("dmdistill")
    assert dm.to_dict() == _recipe("dmdistill", weights=DistillWeights(align=0.3)).to_dict()
    assert dm.to_dict() != _recipe("dmdistill", weights=DistillWeights(cka=2.0)).to_dict()
    ca = _recipe("cadistill")
    assert ca.to_dict() != _recipe("cadistill", pairing="matched").to_dict()
    assert ca.to_dict() != _recipe("cadistill", condition="null").to_dict()
    assert "pairing" not in dm.to_dict()
    with pytest.raises(ValueError, match="controls of CFGDistill and CaDistill"):
        _recipe("dmdistill", pairing="matched")
    with pytest.raises(ValueError, match="method must be"):
        StudentRecipe(method="supcon")


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.05) and lr_at(100, 100, 10, 0.1) == pytest.approx(0)


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("method", ["cadistill", "dmdistill"])
def test_resumed_training_equals_an_uninterrupted_run(method, tmp_path):
    recipe = _recipe(method, checkpoint_every=4)  # 6 steps per epoch, 2 epochs
    bank = _bank_of(method)
    ref, ref_history = train_student(recipe, IMAGES, LABELS, C, bank=bank, progress=False)
    ckpt = tmp_path / "run.resume.safetensors"
    pieces = 0
    while True:  # max_seconds=0: one step per call, stopping inside epochs and at their boundaries
        pieces += 1
        try:
            model, history = train_student(recipe, IMAGES, LABELS, C, bank=bank, progress=False, checkpoint=ckpt,
                                           max_seconds=0)
            break
        except TrainingIncomplete:
            assert ckpt.is_file()
    assert pieces == 12
    assert _same_weights(model, ref)
    for k in ("loss", "ce", "align", "sep", "cka", "train_acc", "lr"):
        assert history[k] == pytest.approx(ref_history[k], abs=1e-9), k
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_training_is_seeded_and_learns():
    recipe = _recipe("cadistill", epochs=6, batch_size=16)
    bank = _bank("clarid")
    a, ha = train_student(recipe, IMAGES, LABELS, C, bank=bank, progress=False, monitor=(IMAGES, LABELS))
    b, _ = train_student(recipe, IMAGES, LABELS, C, bank=bank, progress=False)
    c, _ = train_student(_recipe("cadistill", epochs=6, batch_size=16, seed=1), IMAGES, LABELS, C, bank=bank,
                         progress=False)
    assert _same_weights(a, b) and not _same_weights(a, c)
    assert ha["loss"][-1] < ha["loss"][0] and len(ha["monitor_acc"]) == 6
    # built, trained and handed back in NHWC
    convs = [p for p in a.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert set(ha) == {"loss", "ce", "align", "sep", "cka", "train_acc", "lr", "seconds", "monitor_acc"}


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    ckpt = tmp_path / "run.resume.safetensors"
    with pytest.raises(TrainingIncomplete):
        train_student(_recipe("vanilla"), IMAGES, LABELS, C, progress=False, checkpoint=ckpt, max_seconds=0)
    with pytest.raises(ProvenanceError, match="epochs: checkpoint 2, now 3"):
        train_student(_recipe("vanilla", epochs=3), IMAGES, LABELS, C, progress=False, checkpoint=ckpt)


def test_saved_student_carries_its_manifest_and_loads_again():
    recipe, bank = _recipe("cadistill"), _bank("clarid")
    fp = META["data"]
    model, manifest = load_or_train_student(recipe, IMAGES, LABELS, C, fp, bank=bank, test=(IMAGES, LABELS),
                                            progress=False)
    for field in ("key", "config", "data", "method", "seed", "dataset", "epochs", "wall_time_s", "sha256",
                  "test_accuracy", "test_n", "bank", "history"):
        assert field in manifest, field
    assert manifest["method"] == "cadistill" and manifest["bank"] == bank.fingerprint("class")
    assert manifest["test_n"] == N
    assert len(manifest["history"]["monitor_acc"]) == 2
    again, manifest2 = load_or_train_student(recipe, IMAGES, LABELS, C, fp, bank=bank, progress=False)
    assert _same_weights(model, again) and manifest2["key"] == manifest["key"]
    other = TeachingBank("clarid", "shapes", bank.labels, bank.indices, bank.features * 2, bank.images,
                         bank.features_null, META)
    with pytest.raises(TrainingIncomplete):  # another bank is another student (not loaded from the first key)
        load_or_train_student(recipe, IMAGES, LABELS, C, fp, bank=other, progress=False, max_seconds=0)
    wrong = TeachingBank("clarid", "shapes", bank.labels, bank.indices, bank.features, bank.images, None,
                         {**META, "data": "0" * 16})
    with pytest.raises(ProvenanceError, match="fingerprint"):
        load_or_train_student(recipe, IMAGES, LABELS, C, fp, bank=wrong, progress=False)
    with pytest.raises(ValueError, match="needs a 'clarid' bank"):
        load_or_train_student(recipe, IMAGES, LABELS, C, fp, bank=_bank("cfg"), progress=False)


def test_cli_trains_a_smoke_student_then_loads_it(capsys):
    cadistill.main(["--dataset", "shapes", "--method", "vanilla", "--profile", "smoke", "--threads", "1"])
    first = capsys.readouterr().out
    assert "done: vanilla seed 0: test accuracy" in first
    cadistill.main(["--dataset", "shapes", "--method", "vanilla", "--profile", "smoke", "--max-minutes", "0"])
    assert capsys.readouterr().out.splitlines()[-1] == first.splitlines()[-1]  # loaded, same key and accuracy


def test_cli_sweep_trains_one_lambda_at_a_time(monkeypatch, capsys):
    calls = []

    def fake(dataset, methods, seeds, profile, max_seconds=None, **setting):
        calls.append(setting["weights"])
        return {}

    monkeypatch.setattr(cadistill, "book_students", fake)
    cadistill.main(["--dataset", "shapes", "--method", "cadistill", "--profile", "smoke", "--sweep"])
    n = sum(len(v) for v in cadistill.BOOK_SWEEP.values())
    assert len(calls) == n and len(set(calls)) == n - 2  # the three defaults are one setting
    default = DistillWeights()
    assert all(sum(getattr(w, k) != getattr(default, k) for k in ("align", "sep", "cka")) <= 1 for w in calls)
    with pytest.raises(SystemExit):
        cadistill.main(["--dataset", "shapes", "--method", "vanilla", "--sweep"])


# ----------------------------------------------------------------------------------------------------------
# What chapter 6 reports
# ----------------------------------------------------------------------------------------------------------


def _fake_students(accs: dict[str, list[float]]):
    return {(m, s): (None, {"test_accuracy": a, "history": {"monitor_acc": [a / 2, a]}})
            for m, v in accs.items() for s, a in enumerate(v)}


def test_accuracy_table_and_verdict():
    from paperlib.cadistill import PAPER_TABLE1_CLEAN, accuracy_table, clean_verdict, history_array

    students = _fake_students({"vanilla": [0.90, 0.91, 0.92], "cadistill": [0.93, 0.94, 0.95]})
    t = accuracy_table(students, PAPER_TABLE1_CLEAN)
    assert t.loc["vanilla", "mean"] == pytest.approx(91.0) and t.loc["vanilla", "std"] == pytest.approx(1.0)
    assert t.loc["cadistill", "seeds"] == 3 and t.loc["cadistill", "paper"] == 93.1
    # gap 3 points, two standard errors 2 sqrt(2/3) = 1.63: above
    assert clean_verdict(t) == "cadistill is above vanilla by 3.00 points (± 1.63)"
    close = accuracy_table(_fake_students({"vanilla": [0.90, 0.92], "cadistill": [0.91, 0.93]}))
    assert "within two standard errors" in clean_verdict(close)
    one = accuracy_table(_fake_students({"vanilla": [0.9], "cadistill": [0.95]}))
    assert "one seed" in clean_verdict(one) and math.isnan(one.loc["vanilla", "std"])
    arr = history_array(students, "cadistill", "monitor_acc")
    assert arr.shape == (3, 2) and arr[:, 1].tolist() == [0.93, 0.94, 0.95]


def test_loss_terms_on_batch_shows_each_method_and_the_fallback_count():
    from paperlib.cadistill import loss_terms_on_batch

    banks = {kind: _bank(kind) for kind in ("clarid", "cfg", "raw")}
    table, info = loss_terms_on_batch(banks, IMAGES, LABELS, _recipe("cadistill"), n=6, seed=0)
    assert list(table.index) == list(METHODS)
    assert (table.loc["vanilla", ["align", "sep", "cka"]] == 0).all() and table.loc["dmdistill", "sep"] == 0
    assert (table.loc["cadistill", ["ce", "align", "sep", "cka"]] > 0).all()
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:6]
    counts = torch.bincount(LABELS[idx])
    assert info == {"n": 6, "classes": int((counts > 0).sum()), "fallback": int((counts[LABELS[idx]] == 1).sum())}
    partial, _ = loss_terms_on_batch({"clarid": banks["clarid"]}, IMAGES, LABELS, _recipe("cadistill"), n=6)
    assert list(partial.index) == ["vanilla", "cadistill"]  # methods without their bank are left out


def test_a_cli_module_runs_main_after_everything_it_defines():
    """``python -m paperlib.X`` runs the module top to bottom: a ``__main__`` guard above a definition that
    ``main`` reads (once: ``BOOK_SWEEP``) fails only on the command line, never on import."""
    import ast
    from pathlib import Path

    import paperlib

    for path in sorted(Path(paperlib.__file__).parent.glob("*.py")):
        body = ast.parse(path.read_text()).body
        guards = [i for i, node in enumerate(body) if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
        assert guards in ([], [len(body) - 1]), path.name
