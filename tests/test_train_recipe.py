"""The training recipe of #14: presets, input size, augmentation, ordinal targets, balanced
sampling, --exclude-batch, and `casebase eval --batch` / ``--match within:N``.

One database holds a generated cohort twice: batch ``A`` as generated and batch ``B``, a
copy of the same images under other study ids whose labels are all ``zzz``. A search
that let B into an evaluation of A would find each query's pixel-identical twin first.
"""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import casebase
from casebase.cli import main
from casebase.cohort import generate
from casebase.db.connection import connect
from casebase.errors import InputError, QueryError
from casebase.ingest.pipeline import IngestOptions, ingest
from casebase.retrieval.evaluate import relevance_rule
from casebase.train import checkpoint as ck
from casebase.train.augment import Augment, ImageCache, TrainTransform
from casebase.train.data import (
    Pair,
    TextSource,
    epoch_order,
    grades_of,
    load_pairs,
)
from casebase.train.loop import Recipe, train
from casebase.train.loss import pair_targets, shared_text_siglip_loss
from casebase.train.presets import architecture
from tests import test_train

GRADES = {"normal": "0", "cardiomegaly": "2"}  # a numeric "grade" column for ordinal tests
TRAIN = {
    **test_train.TRAIN,  # the small, fast settings of the plain training tests
    "base": "small-resnet",
    "text": "label:grade",
    "recipe": Recipe(image_size=64, ordinal=True, augment=Augment(hflip=True)),
}


def _grade(label: str) -> str:
    first = label.split(";")[0]
    return GRADES.get(first, "1" if "effusion" in first else "3")


@pytest.fixture(scope="module")
def two_batches(db_url, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("cohort")
    manifest = generate(out, n_chest=40, n_knee=10, seed=5)
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    fields = [*rows[0].keys(), "grade"]
    a, b = out / "a.csv", out / "b.csv"
    with a.open("w", newline="") as fa, b.open("w", newline="") as fb:
        wa, wb = csv.DictWriter(fa, fields), csv.DictWriter(fb, fields)
        wa.writeheader()
        wb.writeheader()
        for row in rows:
            wa.writerow({**row, "grade": _grade(row["label"])})
            twin = {**row, "study_id": "B-" + row["study_id"], "label": "zzz", "grade": "9"}
            wb.writerow({**twin, "patient_id": "B-" + row["patient_id"]})
    options = {
        "model": "tiny-random",
        "workers": 0,
        "progress": False,
        "attributes": ("label", "grade"),  # "grade" is no default attribute
    }
    for name, path in (("A", a), ("B", b)):
        summary = ingest(path, IngestOptions(batch=name, **options), url=db_url)
        assert summary.loaded == 50 and summary.rejected == 0, summary
    return db_url


# ---------------------------------------------------------------- presets and input size


def test_presets_build_at_the_asked_size_and_letterbox(db_url, two_batches):
    from casebase.db.spaces import get_space

    with connect(db_url) as conn:
        space = get_space(conn, "tiny-random")
    for name, size in (("small-resnet", 96), ("small-vit", 64)):
        base = ck.load_base(name, space, pretrained=None, seed=0, image_size=size)
        assert base.random_init and base.name == name
        assert base.config.model_cfg["vision_cfg"]["image_size"] == size
        assert base.model.visual.preprocess_cfg["resize_mode"] == "longest"
        out = base.model.encode_image(torch.zeros(2, 3, size, size))
        assert tuple(out.shape) == (2, 64)
    default = ck.load_base("small-resnet", space, pretrained=None, seed=0)
    assert default.config.model_cfg["vision_cfg"]["image_size"] == 128
    with pytest.raises(InputError, match="multiple of 32"):
        architecture("small-resnet", 100)
    with pytest.raises(InputError, match="randomly initialised architecture"):
        ck.load_base("tiny-random", space, pretrained=None, seed=0, image_size=96)


# ---------------------------------------------------------------- augmentation


def _film(width: int = 90, height: int = 50) -> Image.Image:
    pixels = np.tile(np.linspace(20, 235, width, dtype=np.float32), (height, 1))
    pixels[height // 2 - 2 : height // 2 + 2, :] = 0  # a dark "joint space"
    return Image.fromarray(pixels.astype(np.uint8), mode="L")


def test_augment_is_seeded_keeps_size_and_off_is_identity():
    film = _film()
    aug = Augment(hflip=True)
    torch.manual_seed(3)
    first = np.asarray(aug(film))
    torch.manual_seed(3)
    again = np.asarray(aug(film))
    torch.manual_seed(4)
    other = np.asarray(aug(film))
    assert first.shape == again.shape == np.asarray(film).shape
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert np.array_equal(np.asarray(Augment.off()(film)), np.asarray(film))
    assert not Augment.off().active and aug.active

    flip_only = Augment(**{**Augment.off().to_dict(), "hflip": True})
    flips = []
    for seed in range(8):
        torch.manual_seed(seed)
        flips.append(np.array_equal(np.asarray(flip_only(film)), np.asarray(film)[:, ::-1]))
    assert any(flips) and not all(flips), flips

    turned = Augment(**{**Augment.off().to_dict(), "rotate": 30.0})
    black = []
    for seed in range(6):
        torch.manual_seed(seed)
        turned_film = np.asarray(turned(Image.new("L", (60, 60), 200)))
        black.append(int((turned_film == 0).sum()))
        assert set(np.unique(turned_film)) <= set(range(201))
    assert max(black) > 100, black  # corners filled black, like a film's background


def test_training_transform_without_augmentation_is_the_ingest_transform(tmp_path):
    from casebase.embedding import load_encoder

    encoder = load_encoder("tiny-random", device="cpu")
    path = tmp_path / "film.png"
    _film(90, 50).save(path)  # smaller than the cache's limit: cached as decoded
    load = TrainTransform(Augment.off(), encoder.preprocess, ImageCache(2 * 64))
    from casebase.imaging.images import load_image

    assert torch.equal(load(str(path)), encoder.preprocess(load_image(path)))


def test_image_cache_reduces_large_films_and_stops_at_its_budget(tmp_path):
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    _film(400, 200).save(big)
    _film(40, 20).save(small)
    cache = ImageCache(side=100, max_bytes=100 * 50)
    image = cache.get(str(big))
    assert image.size == (100, 50) and image.mode == "L"
    assert cache.get(str(big)) is image  # decoded once
    assert cache.bytes == 100 * 50
    assert cache.get(str(small)) is not cache.get(str(small))  # over budget: decoded each time


# ---------------------------------------------------------------- loss and sampling


def test_ordinal_targets_and_soft_loss_reduce_to_siglip():
    from open_clip.loss import SigLipLoss

    ids = torch.tensor([0, 0, 1, 2])
    grades = torch.tensor([0.0, 0.0, 1.0, 3.0])
    t = pair_targets(ids, grades, neighbour=0.5)
    assert t[0, 1] == 1 and t[0, 2] == 0.5 and t[0, 3] == 0 and t[2, 3] == 0
    assert torch.equal(pair_targets(ids), (ids[:, None] == ids[None, :]).float())

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-2.0)
    loss = shared_text_siglip_loss()
    loss.targets = torch.eye(4)
    assert torch.allclose(loss(img, txt, scale, bias), SigLipLoss()(img, txt, scale, bias))
    loss.targets = t
    soft = loss(img, txt, scale, bias)
    loss.targets = pair_targets(ids)
    assert not torch.allclose(soft, loss(img, txt, scale, bias))


def test_grades_must_be_one_number_per_image():
    def pair(*labels: str) -> Pair:
        return Pair(1, 1, "s", "p", "KXR", "u", ", ".join(labels), frozenset(labels))

    assert grades_of([pair("0"), pair("2.5")]) == [0.0, 2.5]
    with pytest.raises(InputError, match="'mild'"):
        grades_of([pair("1"), pair("mild")])
    with pytest.raises(InputError, match="'1;2'"):
        grades_of([pair("1", "2")])


def test_balanced_order_visits_rare_labels_as_often_as_common_ones():
    texts = ["common"] * 90 + ["rare"] * 10
    plain = epoch_order(texts, seed=0, epoch=1, balanced=False)
    assert sorted(plain) == list(range(100))
    assert plain == epoch_order(texts, seed=0, epoch=1, balanced=False)
    assert plain != epoch_order(texts, seed=0, epoch=2, balanced=False)
    drawn = [
        texts[i] for e in range(1, 21) for i in epoch_order(texts, seed=0, epoch=e, balanced=True)
    ]
    share = drawn.count("rare") / len(drawn)
    assert 0.45 < share < 0.55, share


# ---------------------------------------------------------------- batches


def test_exclude_batch_leaves_its_images_out_of_training(db_url, two_batches, tmp_path):
    from casebase.db.spaces import get_space

    with connect(db_url) as conn:
        space = get_space(conn, "tiny-random")
        everything = load_pairs(conn, space, TextSource("label", "label"))
        only_a = load_pairs(conn, space, TextSource("label", "label"), exclude_batches=["B"])
        assert len(everything) == 100 and len(only_a) == 50
        assert not any(p.study_id.startswith("B-") for p in only_a)
        with pytest.raises(InputError, match="0 images outside batch A, B"):
            train(conn, epochs=1, out=tmp_path / "none", exclude_batches=["A", "B"], **TRAIN)


def test_eval_batch_restricts_queries_and_index_through_the_search_filter(two_batches):
    with casebase.connect(two_batches) as client:
        a = client.evaluate(label="label", ks=(1, 5), queries=50, modality="CXR", batches=["A"])
        both = client.evaluate(label="label", ks=(1, 5), queries=80, modality="CXR")
        assert (a.n_index, a.n_queries, both.n_index) == (40, 40, 80)
        assert a.batches == ("A",) and "of batch A" in a.render()
        # Unrestricted, each A query's pixel-identical twin in B ("zzz") comes first.
        assert both.roundtrip_rate < 1.0
        assert a.roundtrip_rate == 1.0 and a.precision_at_k[1] > both.precision_at_k[1]
        b = client.evaluate(label="label", ks=(5,), queries=50, modality="CXR", batches=["B"])
        assert b.precision_at_k[5] == 1.0  # all "zzz", and no A study among the hits
        with pytest.raises(QueryError, match="no image of batch nope"):
            client.evaluate(label="label", ks=(5,), batches=["nope"])


def test_match_within_n_counts_neighbouring_grades(two_batches):
    near, note = relevance_rule("within:1")
    assert note == " (within 1 grade)"
    assert near({"2"}, {"1"}) and near({"2"}, {"3"}) and not near({"2"}, {"4"})
    for bad in ("within:x", "within:-1", "nearly"):
        with pytest.raises(QueryError, match="within:N"):
            relevance_rule(bad)
    with casebase.connect(two_batches) as client:
        ev = {"label": "grade", "ks": (5,), "queries": 40, "modality": "CXR", "batches": ["A"]}
        exact = client.evaluate(match="exact", **ev)
        within = client.evaluate(match="within:1", **ev)
        everything = client.evaluate(match="within:9", **ev)
        assert within.precision_at_k[5] >= exact.precision_at_k[5]
        assert everything.precision_at_k[5] == 1.0 and "within 9 grades" in everything.relevance
        with pytest.raises(QueryError, match="numeric labels"):
            client.evaluate(match="within:1", **{**ev, "label": "label"})


# ---------------------------------------------------------------- the command line


def test_cli_trains_a_preset_ordinally_without_a_batch_and_reports_each_epoch(
    use_db, two_batches, tmp_path, capsys
):
    out = tmp_path / "run"
    argv = (
        "train --space tiny-random --base small-resnet --image-size 64 --text label:grade "
        "--ordinal --hflip --balanced --exclude-batch B --epochs 2 --batch-size 16 --lr 1e-3 "
        "--holdout 0.3 --workers 0 --device cpu --no-progress --json"
    )
    assert main([*shlex.split(argv), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["n_train"] + result["n_held_out"] == 50, result
    assert result["exclude_batches"] == ["B"] and result["recipe"]["ordinal"] is True
    assert result["recipe"]["augment"]["hflip"] is True and result["recipe"]["balanced"]
    assert result["cpu_seconds"] > 0 and result["epochs_done"] == 2
    lines = [line for line in captured.err.splitlines() if line.startswith("epoch")]
    assert [line.split(":")[0].split()[-1] for line in lines] == ["1", "2"], captured.err
    assert all("loss" in line and "held-out P@5" in line for line in lines)
    doc = json.loads((out / "model.json").read_text())
    assert doc["base"] == "small-resnet" and doc["image_size"] == 64
    assert doc["preprocess_cfg"]["resize_mode"] == "longest"
    assert "grades 1 apart = 0.5" in doc["training"]["loss"]

    assert main(["spaces", "add", "--checkpoint", str(out / "model.pt"), "--name", "knee"]) == 0
    reembed = "reembed --from tiny-random --to knee --batch A --workers 0 --no-progress"
    assert main(reembed.split()) == 0
    capsys.readouterr()
    ev = "eval --space knee --batch A --label grade --match within:1 -k 5 --modality CXR --json"
    assert main(ev.split()) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_index"] == 40 and report["batches"] == ["A"], report
    assert "within 1 grade" in report["relevance"]

    # the run resumes only with the same recipe
    with connect(use_db) as conn, pytest.raises(InputError, match="recipe"):
        train(conn, epochs=3, out=out, **{**TRAIN, "exclude_batches": ["B"]})


def test_ordinal_needs_numeric_grades(use_db, two_batches, tmp_path, capsys):
    argv = (
        "train --space tiny-random --base small-resnet --image-size 64 --text label:label "
        "--ordinal --epochs 1 --workers 0 --device cpu --no-progress"
    )
    assert main([*shlex.split(argv), "--out", str(tmp_path / "r")]) == 1
    assert "--ordinal needs one numeric grade per image" in capsys.readouterr().err
    assert not Path(tmp_path / "r" / "model.pt").exists()


def test_a_model_trained_on_mirror_images_embeds_a_film_and_its_mirror_alike(
    db_url, two_batches, tmp_path
):
    from casebase.embedding import load_encoder
    from casebase.errors import ModelError

    out = tmp_path / "run"
    options = {k: v for k, v in TRAIN.items() if k != "lr"}
    with connect(db_url) as conn:
        with pytest.raises(InputError, match=r"need lr > 0, patience >= 1"):
            train(conn, epochs=1, out=out, lr=-1.0, patience=0, **options)
        train(conn, epochs=1, out=out, exclude_batches=["B"], **options)
    doc = json.loads((out / "model.json").read_text())
    # random init, no lr/weight decay/patience given: the random-init defaults
    assert (doc["training"]["lr"], doc["training"]["weight_decay"]) == (1e-3, 0.05)
    assert doc["training"]["patience"] == 10
    assert doc["tta"] == "hflip"
    encoder = load_encoder(checkpoint=out / "model.pt", device="cpu")
    assert encoder.tta == "hflip" and encoder.spec.preprocess.endswith("-hflip-tta")
    pixels = np.random.default_rng(0).integers(0, 256, (50, 90), dtype=np.uint8)
    pixels[:, :30] = 0  # a film that is not its own mirror image
    film = Image.fromarray(pixels, mode="L").convert("RGB")
    mirror = film.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a, b = encoder.encode_pil([film, mirror])
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    model = encoder.model  # without tta the two differ: the model itself is not symmetric
    x = torch.stack([encoder.preprocess(film), encoder.preprocess(mirror)])
    with torch.inference_mode():
        plain = model.encode_image(x, normalize=True).numpy()
    assert np.abs(plain[0] - plain[1]).max() > 100 * np.abs(a - b).max()

    doc["tta"] = "rotate"
    (out / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="tta 'rotate'"):
        load_encoder(checkpoint=out / "model.pt", device="cpu")
