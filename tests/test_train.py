"""`casebase train`, `spaces`, `reembed` and label fusion on a small generated cohort.

One tiny-random space is ingested once; a 1-epoch run of train is shared, and
tests that change a run directory work on copies of it. The space tests run in
file order: register + switch, then fusion (which reads the registered space),
then drop.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import psycopg
import pytest

import casebase
from casebase.cli import main
from casebase.cohort import generate
from casebase.db.connection import connect
from casebase.errors import CasebaseError, InputError, ModelError
from casebase.imaging.files import sha256_file
from casebase.ingest.pipeline import IngestOptions, ingest
from casebase.train import checkpoint as ck
from casebase.train.data import (
    TextSource,
    load_pairs,
    precision_at_k,
    render_values,
    split_by_patient,
)
from casebase.train.loop import train

TRAIN = {
    "space": "tiny-random",
    "text": "label:label",
    "batch_size": 16,
    "lr": 1e-3,
    "holdout": 0.3,
    "workers": 0,
    "progress": False,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def cohort(db_url, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    manifest = generate(out, n_chest=40, n_knee=10, seed=5)
    summary = ingest(
        manifest,
        IngestOptions(batch="cohort", model="tiny-random", workers=0, progress=False),
        url=db_url,
    )
    assert summary.loaded == 50 and summary.rejected == 0
    return manifest


@pytest.fixture(scope="module")
def run1(db_url, cohort, tmp_path_factory) -> Path:
    """A finished 1-epoch run directory (model.pt, model.json, last.pt)."""
    out = tmp_path_factory.mktemp("runs") / "run1"
    with connect(db_url) as conn:
        result = train(conn, epochs=1, out=out, **TRAIN)
    assert (result.epochs_done, result.resumed_from, result.stopped) == (1, 0, "epochs")
    assert result.checkpoint == str(out / "model.pt") and result.random_init
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


def _vectors(db_url: str, space: str) -> dict[int, np.ndarray]:
    with connect(db_url) as conn:
        rows = conn.execute(
            "SELECT image_id, vec FROM casebase.embeddings WHERE space = %s", (space,)
        ).fetchall()
    return {pk: np.asarray(vec.to_numpy(), np.float32) for pk, vec in rows}


# ---------------------------------------------------------------- data


def test_text_sources_render_labels_findings_and_reports(db_url, cohort):
    from casebase.db.spaces import get_space

    with connect(db_url) as conn:
        space = get_space(conn, "tiny-random")
        by_label = {p.study_id: p for p in load_pairs(conn, space, TextSource.parse("label label"))}
        by_findings = {p.study_id: p for p in load_pairs(conn, space, TextSource("findings"))}
        by_report = {p.study_id: p for p in load_pairs(conn, space, TextSource("report"))}
        labels = dict(
            conn.execute("SELECT study_id, attributes ->> 'label' FROM casebase.studies").fetchall()
        )
    assert len(by_label) == len(by_findings) == len(by_report) == 50
    for sid, pair in by_label.items():
        values = sorted(labels[sid].split(";"))
        assert pair.text == ", ".join(v.replace("_", " ") for v in values), pair
        assert pair.labels == frozenset(values)
    assert render_values([]) == "no finding"
    assert any(p.text == "no finding" for p in by_findings.values())
    assert any("pleural effusion" in p.text for p in by_findings.values())
    assert all("IMPRESSION" not in p.text and p.text for p in by_report.values())
    with pytest.raises(InputError, match="label:COLUMN"):
        TextSource.parse("labels")


def test_held_out_split_is_by_patient_and_precision_is_exact(db_url, cohort):
    from casebase.db.spaces import get_space

    with connect(db_url) as conn:
        pairs = load_pairs(conn, get_space(conn, "tiny-random"), TextSource("label", "label"))
    train_pairs, held = split_by_patient(pairs, 0.3, seed=1)
    assert {p.group for p in train_pairs}.isdisjoint({p.group for p in held})
    assert len(train_pairs) + len(held) == 50 and held
    assert split_by_patient(pairs, 0.3, seed=1) == (train_pairs, held)
    # 4 images on a line: a-a-b-b; P@1 excludes self and same patient ("p1" holds two).
    vecs = np.array([[1, 0], [0.9, 0.1], [0.1, 0.9], [0, 1]], np.float32)
    labels = [frozenset({"a"}), frozenset({"a"}), frozenset({"b"}), frozenset({"b"})]
    assert precision_at_k(vecs, labels, ["p0", "p1", "p2", "p3"], ["CR"] * 4, 1) == 1.0
    assert precision_at_k(vecs, labels, ["p0", "p0", "p2", "p2"], ["CR"] * 4, 1) == 0.0


# ---------------------------------------------------------------- train, register, switch


def test_a_space_without_that_label_or_too_few_held_out_images_is_refused(db_url, cohort, tmp_path):
    with connect(db_url) as conn:
        with pytest.raises(InputError, match="0 images with a label:grade text"):
            train(conn, epochs=1, out=tmp_path / "a", **{**TRAIN, "text": "label:grade"})
        with pytest.raises(InputError, match="held-out images: P@40 needs more than 40"):
            train(conn, epochs=1, out=tmp_path / "b", **{**TRAIN, "k": 40})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_checkpoint_has_config_sha256_and_history(run1):
    doc = json.loads((run1 / "model.json").read_text())
    assert doc["sha256"] == sha256_file(run1 / "model.pt")
    assert doc["base"] == "tiny-random" and doc["random_init"] is True
    assert doc["text"] == "label:label" and doc["image_size"] == 64
    assert doc["model_cfg"]["vision_cfg"]["patch_size"] == 16
    assert [h["epoch"] for h in doc["history"]] == [1]
    assert doc["training"]["n_train"] + doc["training"]["n_held_out"] == 50


def test_train_register_reembed_switch_changes_eval_and_search(use_db, run1, capsys):
    with casebase.connect(use_db) as client:
        before = client.evaluate(label="label", ks=(5,), queries=40, modality="CXR")
    assert before.space == "tiny-random"

    assert main(["spaces", "add", "--checkpoint", str(run1 / "model.pt"), "--name", "trained"]) == 0
    assert (
        main(
            [
                "reembed",
                "--from",
                "tiny-random",
                "--to",
                "trained",
                "--workers",
                "0",
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "reembed",
                "--from",
                "tiny-random",
                "--to",
                "trained",
                "--workers",
                "0",
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    second = json.loads(capsys.readouterr().out)
    assert (second["added"], second["already"]) == (0, 50), second

    old, new = _vectors(use_db, "tiny-random"), _vectors(use_db, "trained")
    assert set(old) == set(new) and len(new) == 50
    with connect(use_db) as conn:  # filter columns copied from the old rows
        rows = conn.execute(
            "SELECT count(*) FROM casebase.embedding a JOIN casebase.embedding b USING "
            "(image_pk) WHERE a.space_id <> b.space_id AND (a.study_id, a.patient_key, a.age, "
            "a.sex, a.view, a.flags, a.batch) IS NOT DISTINCT FROM (b.study_id, b.patient_key,"
            " b.age, b.sex, b.view, b.flags, b.batch)"
        ).fetchone()[0]
    assert rows == 100

    assert main(["spaces", "default", "trained"]) == 0
    with casebase.connect(use_db) as client:
        assert client.space().name == "trained"
        after = client.evaluate(label="label", ks=(5,), queries=40, modality="CXR")
        hits = client.search(study_id="DEMO-C0001", k=5, exact=True)
    assert after.space == "trained" and after.n_index == before.n_index == 40
    assert (after.precision_at_k, after.map_at_k) != (before.precision_at_k, before.map_at_k)
    q = next(pk for pk, v in new.items() if pk == _image_of(use_db, "DEMO-C0001"))
    for hit in hits:  # distances are those of the trained vectors, not the old ones
        expected = 1 - float(new[q] @ new[hit.image_id])
        assert hit.distance == pytest.approx(expected, abs=1e-4), (hit, expected)
    assert main(["spaces", "list"]) == 0
    listing = capsys.readouterr().out
    assert "* trained" in listing and "tiny-random" in listing and "CXR 40, KXR 10" in listing


def _image_of(db_url: str, study_id: str) -> int:
    with connect(db_url) as conn:
        return conn.execute(
            "SELECT image_id FROM casebase.images WHERE study_id = %s", (study_id,)
        ).fetchone()[0]


def test_resume_after_interruption_starts_at_the_next_epoch(use_db, run1, tmp_path, capsys):
    out = _copy(run1, tmp_path)
    first = json.loads((out / "model.json").read_text())["history"]
    code = main(
        [
            "train",
            "--space",
            "tiny-random",
            "--text",
            "label",
            "label",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--batch-size",
            "16",
            "--lr",
            "1e-3",
            "--holdout",
            "0.3",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--no-progress",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resumed_from"] == 1 and result["epochs_done"] == 2, result
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert result["history"][0] == first[0]  # epoch 1 was not trained again
    with connect(use_db) as conn:  # a finished run re-run does nothing
        again = train(conn, epochs=2, out=out, **TRAIN)
        assert again.stopped == "already done" and again.epochs_done == 2
        with pytest.raises(InputError, match="other settings"):
            train(conn, epochs=3, out=out, **{**TRAIN, "text": "findings"})
        with pytest.raises(InputError, match="batch_size: 16 → 32"):
            train(conn, epochs=3, out=out, **{**TRAIN, "batch_size": 32})


def test_a_run_from_before_batch_size_was_recorded_still_resumes(tmp_path):
    now = {"space": "s", "seed": 0, "batch_size": 64}
    ck.check_resumable(tmp_path, {"fingerprint": {"space": "s", "seed": 0}}, now)
    with pytest.raises(InputError, match="batch_size: 32 → 64"):
        ck.check_resumable(tmp_path, {"fingerprint": {**now, "batch_size": 32}}, now)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
    db_url, run1, tmp_path
):
    out = _copy(run1, tmp_path)
    sha = sha256_file(out / "model.pt")
    with connect(db_url) as conn, pytest.raises(CasebaseError) as info:
        train(conn, epochs=3, out=out, **{**TRAIN, "lr": 1e9})
    message = str(info.value)
    assert "diverged" in message and "nan" in message.lower(), message
    assert str(out / "model.pt") in message and "resume after epoch 1" in message
    assert sha256_file(out / "model.pt") == sha
    assert json.loads((out / "model.json").read_text())["sha256"] == sha
    assert ck.load_state(out)["epoch"] == 1


def test_checkpoint_whose_weights_do_not_match_its_config_is_refused(
    use_db, run1, tmp_path, capsys
):
    from casebase.embedding import load_encoder

    out = _copy(run1, tmp_path)
    config = out / "model.json"
    doc = json.loads(config.read_text())
    doc["model_cfg"]["vision_cfg"]["width"] = 32
    config.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match=str(out / "model.pt")):
        load_encoder(checkpoint=out / "model.pt", device="cpu")
    assert main(["spaces", "add", "--checkpoint", str(out / "model.pt")]) == 1
    err = capsys.readouterr().err
    assert "do not match the architecture" in err and str(out / "model.pt") in err, err
    with connect(use_db) as conn, pytest.raises(ModelError, match=str(out / "model.pt")):
        train(conn, epochs=1, out=tmp_path / "other", base=str(out / "model.pt"), **TRAIN)


def test_label_fusion_records_weights_and_changes_the_vectors(use_db, run1, capsys):
    from casebase.db.spaces import get_space
    from casebase.retrieval.encode import encoder_for_space

    assert main(["spaces", "add", "--checkpoint", str(run1 / "model.pt"), "--name", "fused"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "reembed",
                "--from",
                "tiny-random",
                "--to",
                "fused",
                "--fuse-text",
                "label:label",
                "--w-img",
                "0.7",
                "--w-text",
                "0.3",
                "--workers",
                "0",
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert (summary["added"], summary["fused"]) == (50, 50), summary
    with connect(use_db) as conn:
        space = get_space(conn, "fused")
        labels = dict(
            conn.execute(
                "SELECT i.image_id, s.attributes ->> 'label' FROM "
                "casebase.images i JOIN casebase.studies s USING (study_id)"
            ).fetchall()
        )
    assert space.fusion == {"text": "label:label", "w_img": 0.7, "w_text": 0.3}
    fused, plain = _vectors(use_db, "fused"), _vectors(use_db, "trained")
    encoder = encoder_for_space(space, "cpu")
    for pk in list(fused)[:10]:
        text = encoder.encode_text([render_values(sorted(labels[pk].split(";")))])[0]
        want = 0.7 * plain[pk] + 0.3 * text
        np.testing.assert_allclose(fused[pk], want / np.linalg.norm(want), atol=1e-4)
        assert not np.allclose(fused[pk], plain[pk], atol=1e-3)
    with connect(use_db) as conn:
        with pytest.raises(InputError, match="label-fused"):
            from casebase.train.reembed import reembed

            reembed(conn, source="tiny-random", target="fused", workers=0, progress=False)
        with pytest.raises(InputError, match="plain image vectors"):
            reembed(
                conn,
                source="tiny-random",
                target="trained",
                fuse_text="label:label",
                workers=0,
                progress=False,
            )


def test_drop_refuses_the_default_and_deletes_a_space(use_db, capsys):
    with casebase.connect(use_db) as client:
        default = client.space().name
    assert main(["spaces", "drop", default]) == 1
    assert "is the default" in capsys.readouterr().err
    assert main(["spaces", "drop", "tiny-random"]) == 0
    with psycopg.connect(use_db) as conn:
        left = [r[0] for r in conn.execute("SELECT space FROM casebase.spaces").fetchall()]
        n = conn.execute(
            "SELECT count(*) FROM casebase.embeddings WHERE space = 'tiny-random'"
        ).fetchone()[0]
        batch_space = conn.execute("SELECT space_id FROM casebase.ingest_batch").fetchone()[0]
    assert "tiny-random" not in left and n == 0 and batch_space is None
