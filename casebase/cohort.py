"""A synthetic demo cohort: chest and knee radiographs in which the findings are visible.

Generated, not shipped, so its licence is ours and nothing is downloaded. Each
finding changes the pixels the way it changes a film (a wider heart shadow, a
blunted costophrenic angle, a chest-tube line, a narrowed knee joint space), so
a model trained on the cohort can retrieve by finding. Reports use negation and
hedging ("no pneumothorax", "possible small effusion") like real ones.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 256
CXR_FINDINGS = ("cardiomegaly", "pleural_effusion", "chest_tube", "pneumothorax", "opacity")
KXR_FINDINGS = ("joint_space_narrowing", "osteophyte", "joint_effusion")

_PRESENT = {
    "cardiomegaly": ["The cardiac silhouette is enlarged.", "Cardiomegaly."],
    "pleural_effusion": [
        "Small left pleural effusion.",
        "Blunting of the left costophrenic angle consistent with a pleural effusion.",
    ],
    "chest_tube": ["Left chest tube in place."],
    "pneumothorax": ["Small right apical pneumothorax."],
    "opacity": ["Patchy opacity in the right lower lobe."],
    "joint_space_narrowing": ["Medial joint space narrowing."],
    "osteophyte": ["Marginal osteophytes are present."],
    "joint_effusion": ["Suprapatellar joint effusion."],
}
_ABSENT = {
    "cardiomegaly": "Heart size is normal.",
    "pleural_effusion": "No pleural effusion.",
    "pneumothorax": "No pneumothorax.",
    "opacity": "No focal consolidation.",
    "joint_space_narrowing": "Joint spaces are preserved.",
    "joint_effusion": "No joint effusion.",
}
_HEDGED = {
    "pleural_effusion": "Possible small left pleural effusion.",
    "opacity": "Subtle right basilar opacity, may represent atelectasis.",
    "osteophyte": "Questionable small osteophyte.",
}


@dataclass(frozen=True)
class CohortCase:
    study_id: str
    patient_id: str
    modality: str
    view: str
    sex: str
    age: int
    study_date: str
    findings: tuple[str, ...]
    report: str
    image: str


_GRID = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE


def _grid() -> tuple[np.ndarray, np.ndarray]:
    return _GRID[0], _GRID[1]


def _ellipse(y, x, cy, cx, ry, rx) -> np.ndarray:
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _chest(rng: np.random.Generator, findings: set[str], portable: bool) -> np.ndarray:
    y, x = _grid()
    img = np.full((SIZE, SIZE), 0.08, np.float32)
    img[_ellipse(y, x, 0.55, 0.5, 0.48, 0.42)] = 0.55  # soft tissue of the thorax
    lung_r = _ellipse(y, x, 0.5, 0.32, 0.32, 0.14)
    lung_l = _ellipse(y, x, 0.5, 0.68, 0.32, 0.14)
    texture = 0.05 * rng.normal(size=(SIZE, SIZE)).astype(np.float32)
    img[lung_r | lung_l] = 0.18
    img += np.where(lung_r | lung_l, texture, 0)
    heart_w = 0.2 if "cardiomegaly" in findings else 0.12
    img[_ellipse(y, x, 0.66, 0.54, 0.14, heart_w)] = 0.7  # heart shadow
    img[(np.abs(x - 0.5) < 0.035) & (y < 0.6)] = 0.65  # mediastinum / spine
    if "pleural_effusion" in findings:  # blunted left costophrenic angle: fluid meniscus
        fluid = lung_l & (y > 0.68 - 0.08 * (x - 0.68) ** 2 / 0.02)
        img[fluid] = 0.62
    if "pneumothorax" in findings:  # no lung markings at the right apex, pleural line
        apex = lung_r & (y < 0.36)
        img[apex] = 0.1
        img[lung_r & (np.abs(y - 0.36) < 0.006)] = 0.8
    if "opacity" in findings:
        img[_ellipse(y, x, 0.68, 0.3, 0.07, 0.06)] = 0.5
    if "chest_tube" in findings:  # a bright line entering from the left chest wall
        t = np.linspace(0, 1, 400)
        iy = ((0.75 - 0.45 * t) * SIZE).astype(int)
        ix = ((0.95 - 0.25 * t + 0.05 * np.sin(3 * t)) * SIZE).astype(int)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                img[np.clip(iy + dy, 0, SIZE - 1), np.clip(ix + dx, 0, SIZE - 1)] = 1.0
    if portable:  # AP bedside film: lower contrast, noisier, marker burned in
        img = 0.25 + 0.6 * img + 0.04 * rng.normal(size=img.shape).astype(np.float32)
        img[10:22, 10:60] = 0.95
    return img


def _knee(rng: np.random.Generator, findings: set[str]) -> np.ndarray:
    y, x = _grid()
    img = np.full((SIZE, SIZE), 0.08, np.float32)
    img[np.abs(x - 0.5) < 0.3] = 0.3  # soft tissue
    gap = 0.02 if "joint_space_narrowing" in findings else 0.06
    femur = (np.abs(x - 0.5) < 0.16) & (y < 0.5 - gap / 2)
    tibia = (np.abs(x - 0.5) < 0.17) & (y > 0.5 + gap / 2)
    img[femur | tibia] = 0.8
    img += 0.03 * rng.normal(size=img.shape).astype(np.float32)
    if "osteophyte" in findings:  # spurs at the joint margins
        for side in (0.33, 0.67):
            img[_ellipse(y, x, 0.5 - gap, side, 0.03, 0.02)] = 0.85
            img[_ellipse(y, x, 0.5 + gap, side, 0.03, 0.02)] = 0.85
    if "joint_effusion" in findings:  # suprapatellar swelling
        img[_ellipse(y, x, 0.32, 0.5, 0.1, 0.26) & ~femur] = 0.45
    return img


def _acquisition(rng: np.random.Generator, pixels: np.ndarray) -> np.ndarray:
    """Exposure, contrast and noise vary from film to film, as they do between machines,
    so that what separates cases is the finding, not how the film was taken."""
    gain = rng.uniform(0.65, 1.25)
    gamma = rng.uniform(0.7, 1.4)
    offset = rng.uniform(-0.08, 0.12)
    noisy = np.clip(pixels, 0, 1) ** gamma * gain + offset
    noisy += rng.uniform(0.01, 0.07) * rng.normal(size=pixels.shape)
    return np.clip(noisy, 0, 1)


def _position(rng: np.random.Generator, image):
    """Patients are not centred the same way: a small rotation, shift and zoom."""
    from PIL import Image

    angle = rng.uniform(-8, 8)
    zoom = rng.uniform(0.88, 1.12)
    dx, dy = rng.uniform(-0.07, 0.07, size=2) * SIZE
    size = int(SIZE * zoom)
    moved = image.rotate(
        angle, resample=Image.Resampling.BILINEAR, translate=(dx, dy), fillcolor=20
    )
    moved = moved.resize((size, size), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (SIZE, SIZE), 20)
    canvas.paste(moved, ((SIZE - size) // 2, (SIZE - size) // 2))
    return canvas


def _report(
    rng: np.random.Generator, present: set[str], vocab: tuple[str, ...], hedged: set[str]
) -> str:
    sentences = []
    for f in vocab:
        if f in hedged:
            sentences.append(_HEDGED[f])
        elif f in present:
            sentences.append(str(rng.choice(_PRESENT[f])))
        elif f in _ABSENT and rng.random() < 0.7:
            sentences.append(_ABSENT[f])
    rng.shuffle(sentences)
    if not present and not hedged:
        impression = (
            "No acute cardiopulmonary abnormality."
            if "opacity" in vocab
            else "No acute osseous abnormality."
        )
    else:
        impression = " ".join(sentences[:1])
    return f"FINDINGS: {' '.join(sentences)}\nIMPRESSION: {impression}"


def generate(out_dir: str | Path, *, n_chest: int = 400, n_knee: int = 120, seed: int = 0) -> Path:
    """Write images and ``manifest.csv`` under ``out_dir``; return the manifest path."""
    from PIL import Image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases: list[CohortCase] = []
    start = dt.date(2024, 1, 1)
    for i in range(n_chest + n_knee):
        chest = i < n_chest
        vocab = CXR_FINDINGS if chest else KXR_FINDINGS
        prevalence = 0.3 if chest else 0.4
        present = {f for f in vocab if rng.random() < prevalence}
        hedged = {f for f in _HEDGED if f in vocab and f not in present and rng.random() < 0.08}
        portable = chest and rng.random() < 0.2
        sex = str(rng.choice(["F", "M"]))
        age = int(np.clip(rng.normal(62 if chest else 58, 15), 18, 95))
        pixels = _chest(rng, present, portable) if chest else _knee(rng, present)
        pixels = _acquisition(rng, pixels)
        name = f"{'cxr' if chest else 'kxr'}_{i:04d}.png"
        image = Image.fromarray((pixels * 255).astype(np.uint8), mode="L")
        _position(rng, image).save(out / "images" / name)
        cases.append(
            CohortCase(
                study_id=f"DEMO-{'C' if chest else 'K'}{i:04d}",
                patient_id=f"PAT{int(rng.integers(0, (n_chest + n_knee) * 3 // 4)):04d}",
                modality="CR",
                view=("AP SUPINE" if portable else "PA") if chest else "AP",
                sex=sex,
                age=age,
                study_date=(start + dt.timedelta(days=int(rng.integers(0, 700)))).isoformat(),
                findings=tuple(sorted(present)),
                report=_report(rng, present, vocab, hedged),
                image=f"images/{name}",
            )
        )
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "study_id",
                "patient_id",
                "modality",
                "body_part",
                "view",
                "sex",
                "age",
                "study_date",
                "report",
                "image_path",
                "label",
            ]
        )
        for c in cases:
            body = "CHEST" if c.study_id.startswith("DEMO-C") else "KNEE"
            w.writerow(
                [
                    c.study_id,
                    c.patient_id,
                    c.modality,
                    body,
                    c.view,
                    c.sex,
                    c.age,
                    c.study_date,
                    c.report,
                    c.image,
                    ";".join(c.findings) or "normal",
                ]
            )
    return manifest
