"""The knee radiographs of ``../shared/data/knee_kl`` as casebase batches, for knee_kl.py.

- **Test split** (fixed by the data set's README): the images whose sha1's first 8 hex
  digits, as an integer, are divisible by 5 (319 of 1,633).
- **Validation split**: a deterministic fifth of the *near-duplicate groups* of the other
  images (a salted sha1 of the group's key), so no group has images on both sides.
- **Near-duplicate groups**: the folder holds the same knee several times (the same film
  re-windowed, re-cropped or shifted by a few pixels: 1036/1174 are identical, 761/776/779
  one knee at three exposures). The files carry no patient id, so images are grouped by
  their fine structure: a band-pass (difference of Gaussians, σ 1 and 4 at 150x80) of
  each image is correlated with that of its 15 globally most similar images, at every
  shift of up to 12 px, and pairs whose best Pearson correlation is at least 0.65 are
  joined (single linkage). Different knees score 0.3-0.6; a film and its re-windowed
  copy 0.9-1.0; the same knee re-cropped 0.65-0.9 (checked by eye). The group is the
  manifest's ``patient_id``: training holds groups out whole, and `casebase eval` never
  counts a query's own group among its neighbours.
- **Label**: expert I's KL grade (column ``kl``); the experts agree on 1,622/1,633 and
  expert I is the one the data set's train folder (and the issue) uses. Expert II's
  grade is kept as ``kl_expert_ii``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DUPLICATE_THRESHOLD = 0.65
CANDIDATES = 15
MAX_SHIFT = 12
BATCHES = ("knee-train", "knee-val", "knee-test")


@dataclass(frozen=True)
class KneeImage:
    name: str  # knee_0001
    path: Path
    grade: int  # expert I
    grade_ii: int
    sha1: str

    @property
    def is_test(self) -> bool:
        return int(self.sha1[:8], 16) % 5 == 0


def read_images(data: Path) -> list[KneeImage]:
    with (data / "metadata.csv").open(newline="") as fh:
        return [
            KneeImage(
                Path(r["image_path"]).stem,
                (data / r["image_path"]).resolve(),
                int(r["kl_grade_expert_I"]),
                int(r["kl_grade_expert_II"]),
                r["sha1"],
            )
            for r in csv.DictReader(fh)
        ]


def _features(images: list[KneeImage]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import ImageFilter

    from casebase.imaging.images import load_image

    coarse, band = [], []
    for im in images:
        grey = load_image(im.path).convert("L")
        small = np.asarray(grey.resize((128, 64)), np.float32).ravel()
        small = (small - small.mean()) / (small.std() + 1e-6)
        coarse.append(small / np.linalg.norm(small))
        mid = grey.resize((150, 80))
        fine = np.asarray(mid.filter(ImageFilter.GaussianBlur(1)), np.float32)
        band.append(fine - np.asarray(mid.filter(ImageFilter.GaussianBlur(4)), np.float32))
    return np.array(coarse), np.array(band)


def _pair_scores(coarse: np.ndarray, band: np.ndarray) -> dict[tuple[int, int], float]:
    """Best Pearson correlation over shifts (FFT), for each image and its candidates."""
    from numpy.fft import irfft2, rfft2

    n, h, w = band.shape
    m = MAX_SHIFT
    hh, ww = h - 2 * m, w - 2 * m
    centre = band[:, m : h - m, m : w - m]
    centre = centre - centre.mean(axis=(1, 2), keepdims=True)
    centre /= np.linalg.norm(centre, axis=(1, 2), keepdims=True) + 1e-12
    shape = (2 * h, 2 * w)
    f_centre = rfft2(centre[:, ::-1, ::-1], s=shape)
    f_band, f_band2 = rfft2(band, s=shape), rfft2(band**2, s=shape)
    f_box = rfft2(np.ones((hh, ww)), s=shape)
    valid = (slice(hh - 1, h), slice(ww - 1, w))
    sims = coarse @ coarse.T
    np.fill_diagonal(sims, -np.inf)
    scores: dict[tuple[int, int], float] = {}
    for i in range(n):
        for j in np.argsort(-sims[i])[:CANDIDATES]:
            a, b = min(i, int(j)), max(i, int(j))
            if (a, b) in scores:
                continue
            num = irfft2(f_centre[a] * f_band[b], s=shape)[valid]
            total = irfft2(f_box * f_band[b], s=shape)[valid]
            squares = irfft2(f_box * f_band2[b], s=shape)[valid]
            var = np.maximum(squares - total**2 / (hh * ww), 1e-6)
            scores[(a, b)] = float((num / np.sqrt(var)).max())
    return scores


def duplicate_groups(images: list[KneeImage], cache: Path) -> dict[str, str]:
    """image name → group id (the name of the group's first image); cached as JSON."""
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("threshold") == DUPLICATE_THRESHOLD and len(saved["groups"]) == len(images):
            return saved["groups"]
    scores = _pair_scores(*_features(images))
    parent = list(range(len(images)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (a, b), score in sorted(scores.items()):
        if score >= DUPLICATE_THRESHOLD:
            ra, rb = root(a), root(b)
            parent[max(ra, rb)] = min(ra, rb)
    groups = {im.name: images[root(i)].name for i, im in enumerate(images)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"threshold": DUPLICATE_THRESHOLD, "groups": groups}))
    return groups


def split_of(image: KneeImage, group: str, groups_sha1: dict[str, str]) -> str:
    """knee-test (fixed), else knee-val for a salted fifth of the groups, else knee-train."""
    if image.is_test:
        return "knee-test"
    key = hashlib.sha1(f"knee-val:{groups_sha1[group]}".encode()).hexdigest()
    return "knee-val" if int(key[:8], 16) % 5 == 0 else "knee-train"


def write_manifests(images: list[KneeImage], groups: dict[str, str], out: Path) -> dict:
    """One manifest per batch (study = image, patient = near-duplicate group)."""
    first_sha1: dict[str, str] = {}
    for im in images:
        group = groups[im.name]
        first_sha1[group] = min(first_sha1.get(group, im.sha1), im.sha1)
    rows: dict[str, list[list[object]]] = defaultdict(list)
    for im in images:
        group = groups[im.name]
        rows[split_of(im, group, first_sha1)].append(
            [
                f"KNEE-{im.name}",
                f"dup-{group}",
                "CR",
                "KNEE",
                "AP",
                str(im.path),
                im.grade,
                im.grade_ii,
            ]
        )
    out.mkdir(parents=True, exist_ok=True)
    manifests = {}
    for batch in BATCHES:
        path = out / f"{batch}.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["study_id", "patient_id", "modality", "body_part", "view",
                        "image_path", "kl", "kl_expert_ii"])  # fmt: skip
            w.writerows(rows[batch])
        manifests[batch] = path
    return manifests


def split_rows(manifest: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return (
        [Path(r["image_path"]) for r in rows],
        np.array([int(r["kl"]) for r in rows]),
        [r["patient_id"] for r in rows],
    )


def retrieval_metrics(
    vectors: np.ndarray, grades: np.ndarray, groups: list[str], ks=(5, 10)
) -> dict[str, float]:
    """`casebase eval`'s definitions, exact kNN in numpy: every image a query, its own
    group excluded; P@k (same grade), mAP@k, and P@k within one grade."""
    vecs = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = vecs @ vecs.T
    group_ids = np.unique(groups, return_inverse=True)[1]
    sims[group_ids[:, None] == group_ids[None, :]] = -np.inf
    kmax = max(ks)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :kmax]
    same = grades[top] == grades[:, None]
    near = np.abs(grades[top] - grades[:, None]) <= 1
    n_rel = np.array(
        [((grades == g) & (group_ids != group_ids[i])).sum() for i, g in enumerate(grades)]
    )
    out: dict[str, float] = {}
    for k in ks:
        out[f"P@{k}"] = float(same[:, :k].mean())
        out[f"P@{k}±1"] = float(near[:, :k].mean())
        hits = np.cumsum(same[:, :k], axis=1)
        ap = (same[:, :k] * hits / np.arange(1, k + 1)).sum(axis=1)
        out[f"mAP@{k}"] = float(
            np.mean(np.where(n_rel > 0, ap / np.maximum(1, np.minimum(k, n_rel)), 0))
        )
    return out


def raw_pixels(paths: list[Path], size: int = 64) -> np.ndarray:
    """The issue's non-learned reference: grey pixels squashed to size x size, L2 kNN."""
    from casebase.imaging.images import load_image

    return np.array(
        [
            np.asarray(load_image(p).convert("L").resize((size, size)), np.float32).ravel()
            for p in paths
        ]
    )
