"""Image paths stay inside their root in a batch (issue 12): a DICOM folder's walk does
not follow a symlink out of it, and ``--allow-outside-root`` lets a site that keeps its
images behind links load them (CLI and library).

The manifest cases (``../``, absolute paths, symlinks, existing or missing targets) are
in the battery (tests/test_ingest_battery.py); the resolver itself in tests/test_paths.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from casebase.ingest.dicom_source import plan_dicom_folder
from casebase.ingest.pipeline import IngestOptions, ingest
from tests.conftest import REPO

SIIM = "siim_acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
HIGHDICOM = "highdicom_dx_image.dcm"


@pytest.fixture()
def dicom_tree(shared_data: Path, tmp_path: Path) -> dict[str, Path]:
    """folder/a/in.dcm inside; outside/out.dcm beside it, reached by a file symlink and a
    folder symlink; a dangling symlink out."""
    folder, outside = tmp_path / "folder", tmp_path / "outside"
    (folder / "a").mkdir(parents=True)
    outside.mkdir()
    shutil.copyfile(shared_data / "dicom" / SIIM, folder / "a" / "in.dcm")
    shutil.copyfile(shared_data / "dicom" / HIGHDICOM, outside / "out.dcm")
    (folder / "link_out.dcm").symlink_to(outside / "out.dcm")
    (folder / "dir_out").symlink_to(outside)
    (folder / "dangling.dcm").symlink_to(outside / "missing.dcm")
    return {"folder": folder, "outside": outside}


def test_a_dicom_walk_rejects_symlinks_that_lead_out(dicom_tree) -> None:
    folder = dicom_tree["folder"]
    plan = plan_dicom_folder(folder)
    assert [(s.modality, [i.path for i in s.images]) for s in plan.studies] == [
        ("CXR", [folder / "a" / "in.dcm"])
    ]
    reason = f"file leads outside the images root {folder}"
    got = sorted((r.row_ref, r.study_id, r.reason) for r in plan.rejects)
    assert got == [
        ("dangling.dcm", None, reason),
        ("dir_out", None, reason),
        ("link_out.dcm", None, reason),
    ], got


def test_allow_outside_root_follows_file_symlinks_of_a_dicom_folder(dicom_tree) -> None:
    folder, outside = dicom_tree["folder"], dicom_tree["outside"]
    plan = plan_dicom_folder(folder, confined=False)
    paths = sorted(str(i.path) for s in plan.studies for i in s.images)
    assert paths == [str(folder / "a" / "in.dcm"), str(folder / "link_out.dcm")], paths
    assert (folder / "link_out.dcm").resolve() == outside / "out.dcm"


def test_allow_outside_root_loads_a_manifest_path_outside(
    use_db: str, shared_data: Path, tmp_path: Path
) -> None:
    images, manifests = tmp_path / "images", tmp_path / "manifests"
    images.mkdir()
    manifests.mkdir()
    shutil.copyfile(shared_data / "covid_cxr" / "images" / "000001-9-b.jpg", images / "a.jpg")
    manifest = manifests / "m.csv"
    manifest.write_text(
        "study_id,image_path,modality,body_part\n"
        "OUT-1,../images/a.jpg,CR,CHEST\n"
        f"OUT-2,{images / 'a.jpg'},CR,CHEST\n",
        encoding="utf-8",
    )
    options = IngestOptions(batch="outside-refused", model="tiny-random", workers=0)
    refused = ingest(manifest, options, url=use_db)
    assert (refused.loaded, refused.rejected) == (0, 2), refused
    proc = subprocess.run(
        [sys.executable, "-m", "casebase.cli", "ingest", str(manifest), "--batch", "outside",
         "--model", "tiny-random", "--workers", "0", "--no-progress", "--allow-outside-root"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 loaded, 0 skipped (already there), 0 rejected" in proc.stdout, proc.stdout
    with psycopg.connect(use_db) as conn:
        rows = conn.execute(
            "SELECT study_id FROM casebase.studies WHERE batch = 'outside' ORDER BY 1"
        ).fetchall()
    assert rows == [("OUT-1",), ("OUT-2",)]
