"""Score the rule-based labeller against the coded labels of Indiana University reports.

    python benchmarks/labeller.py [--data PATH] [--json] [--errors FINDING] [--n 10]

The IU collection codes each report with MeSH terms (``Head/modifier/...``, ``;``
separated) and marks normal studies with ``Problems == "normal"``. MESH_MAP below maps
coded heads (optionally only with a given modifier) to casebase finding ids; a report is
a gold positive for a finding when any of its terms maps to it. "No Indexing" rows were
never coded and are skipped, and so are reports with no findings or impression text
(the coders labelled some of those "normal" from elsewhere; no text labeller can see
that, and casebase deliberately invents nothing for an empty report) — the count of
each is printed. The labeller reads the findings + impression text and
counts a finding as predicted when ``label_report`` says "present".

Negative findings are never coded and hedged findings are coded inconsistently, so
"uncertain" predictions count as not-present here; the assertion tests, not this
score, define how hedges are handled.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from casebase.synthesis import label_reports

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_DATA = REPO_ROOT / ".." / "shared" / "data" / "iu_xray" / "reports_dev.csv"
MIN_POSITIVES = 30

# (MeSH head, required modifier or None, finding id). A required modifier must appear
# among the term's modifiers (e.g. "Lung/hypoinflation/mild" → low_lung_volumes).
MESH_MAP: list[tuple[str, str | None, str]] = [
    ("Cardiomegaly", None, "cardiomegaly"),
    ("Cardiac Shadow", "enlarged", "cardiomegaly"),
    ("Pleural Effusion", None, "pleural_effusion"),
    ("Pneumothorax", None, "pneumothorax"),
    ("Hydropneumothorax", None, "pneumothorax"),
    ("Hemopneumothorax", None, "pneumothorax"),
    ("Opacity", None, "opacity"),
    ("Airspace Disease", None, "opacity"),
    ("Infiltrate", None, "opacity"),
    ("Density", "lung", "opacity"),
    ("Density", "retrocardiac", "opacity"),
    ("Calcinosis", "aorta", "atherosclerosis"),
    ("Calcinosis", "aorta, thoracic", "atherosclerosis"),  # a modifier with a comma
    ("Calcinosis", "aortic arch", "atherosclerosis"),
    ("Calcinosis", "blood vessels", "atherosclerosis"),
    ("Pulmonary Atelectasis", None, "atelectasis"),
    ("Consolidation", None, "consolidation_pneumonia"),
    ("Pneumonia", None, "consolidation_pneumonia"),
    ("Pulmonary Edema", None, "edema_congestion"),
    ("Pulmonary Congestion", None, "edema_congestion"),
    ("Nodule", None, "nodule_mass"),
    ("Mass", None, "nodule_mass"),
    ("Fractures, Bone", None, "fracture"),
    ("Emphysema", None, "emphysema_hyperinflation"),
    ("Pulmonary Emphysema", None, "emphysema_hyperinflation"),
    ("Bullous Emphysema", None, "emphysema_hyperinflation"),
    ("Pulmonary Disease, Chronic Obstructive", None, "emphysema_hyperinflation"),
    ("Lung", "hyperdistention", "emphysema_hyperinflation"),
    ("Lung, Hyperlucent", None, "emphysema_hyperinflation"),
    ("Calcified Granuloma", None, "granuloma"),
    ("Granulomatous Disease", None, "granuloma"),
    ("Granuloma", None, "granuloma"),
    ("Catheters, Indwelling", None, "support_devices"),
    ("Medical Device", None, "support_devices"),
    ("Implanted Medical Device", None, "support_devices"),
    ("Tube, Inserted", None, "support_devices"),
    ("Pacemaker, Artificial", None, "support_devices"),
    ("Surgical Instruments", None, "support_devices"),
    ("Stents", None, "support_devices"),
    ("Sutures", None, "support_devices"),
    ("Lung", "hypoinflation", "low_lung_volumes"),
    ("Hernia, Hiatal", None, "hiatal_hernia"),
    ("Osteophyte", None, "osteophyte"),
    ("Scoliosis", None, "scoliosis"),
    ("Kyphosis", None, "kyphosis"),
    ("Cicatrix", None, "scarring_fibrosis"),
    ("Pulmonary Fibrosis", None, "scarring_fibrosis"),
    ("Thickening", "pleura", "pleural_thickening"),
    ("Atherosclerosis", None, "atherosclerosis"),
    ("Subcutaneous Emphysema", None, "subcutaneous_emphysema"),
    ("Pneumoperitoneum", None, "pneumoperitoneum"),
    ("Pericardial Effusion", None, "pericardial_effusion"),
    ("Bronchiectasis", None, "bronchiectasis"),
    ("Diaphragmatic Eventration", None, "elevated_hemidiaphragm"),
    ("Diaphragm", "elevated", "elevated_hemidiaphragm"),
    ("Bone Diseases, Metabolic", None, "osteopenia"),
    ("Funnel Chest", None, "chest_wall_deformity"),
    ("Pectus Carinatum", None, "chest_wall_deformity"),
]


@dataclass
class Row:
    uid: str
    text: str
    gold: set[str]


def gold_labels(mesh: str, problems: str) -> set[str]:
    """Finding ids affirmed by one report's coding."""
    labels: set[str] = set()
    if problems.strip().lower() == "normal":
        labels.add("no_finding")
    for term in mesh.split(";"):
        parts = [p.strip() for p in term.strip().split("/")]
        head, modifiers = parts[0], {p.lower() for p in parts[1:]}
        for map_head, modifier, finding in MESH_MAP:
            if head.lower() == map_head.lower() and (modifier is None or modifier in modifiers):
                labels.add(finding)
    return labels


@dataclass
class Skipped:
    not_indexed: int = 0
    no_text: int = 0


def read_rows(path: Path, skipped: Skipped | None = None) -> list[Row]:
    skipped = skipped if skipped is not None else Skipped()
    rows: list[Row] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            if rec["MeSH"].strip() == "No Indexing" or rec["Problems"].strip() == "No Indexing":
                skipped.not_indexed += 1
                continue
            text = "\n".join(t for t in (rec["findings"], rec["impression"]) if t.strip())
            if not text.strip():
                skipped.no_text += 1
                continue
            rows.append(Row(rec["uid"], text, gold_labels(rec["MeSH"], rec["Problems"])))
    return rows


def score(rows: list[Row], predictions: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    evaluated = sorted({f for _, _, f in MESH_MAP} | {"no_finding"})
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0})
    for row, pred in zip(rows, predictions, strict=True):
        predicted = {f for f, s in pred.items() if s == "present"}
        for f in evaluated:
            c = counts[f]
            if f in row.gold and f in predicted:
                c["tp"] += 1
            elif f in predicted:
                c["fp"] += 1
            elif f in row.gold:
                c["fn"] += 1
    table: dict[str, dict[str, float]] = {}
    for f in evaluated:
        c = counts[f]
        p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
        r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        table[f] = {
            "n_pos": c["tp"] + c["fn"],
            "tp": c["tp"],
            "fp": c["fp"],
            "fn": c["fn"],
            "precision": p,
            "recall": r,
            "f1": f1,
        }
    return table


def micro_f1(table: dict[str, dict[str, float]], min_pos: int = MIN_POSITIVES) -> float:
    rows = [v for v in table.values() if v["n_pos"] >= min_pos]
    tp = sum(v["tp"] for v in rows)
    fp = sum(v["fp"] for v in rows)
    fn = sum(v["fn"] for v in rows)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def print_table(table: dict[str, dict[str, float]], n_reports: int, seconds: float) -> None:
    print(
        f"{'finding':<26}{'n_pos':>6}{'tp':>6}{'fp':>6}{'fn':>6}"
        f"{'precision':>11}{'recall':>8}{'F1':>7}"
    )
    for f, v in sorted(table.items(), key=lambda kv: -kv[1]["n_pos"]):
        mark = "" if v["n_pos"] >= MIN_POSITIVES else "  (<30, not in micro)"
        print(
            f"{f:<26}{v['n_pos']:>6}{v['tp']:>6}{v['fp']:>6}{v['fn']:>6}"
            f"{v['precision']:>11.3f}{v['recall']:>8.3f}{v['f1']:>7.3f}{mark}"
        )
    print(f"micro-F1 over findings with >= {MIN_POSITIVES} positives: {micro_f1(table):.3f}")
    print(f"{n_reports} reports labelled in {seconds:.2f} s")


def print_errors(rows: list[Row], preds: list[dict[str, str]], finding: str, n: int) -> None:
    fps = [
        (r, p)
        for r, p in zip(rows, preds, strict=True)
        if p.get(finding) == "present" and finding not in r.gold
    ]
    fns = [
        (r, p)
        for r, p in zip(rows, preds, strict=True)
        if p.get(finding) != "present" and finding in r.gold
    ]
    for name, errs in (("FALSE POSITIVES", fps), ("FALSE NEGATIVES", fns)):
        print(f"\n=== {name} for {finding}: {len(errs)} ===")
        for row, pred in errs[:n]:
            print(f"- uid {row.uid}: predicted {pred.get(finding)}; gold {sorted(row.gold)}")
            print("  " + row.text.replace("\n", " | "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="reports CSV")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument("--errors", metavar="FINDING", help="print false positives/negatives")
    parser.add_argument("--n", type=int, default=10, help="errors to print per kind")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"error: no such file: {args.data}", file=sys.stderr)
        return 2
    skipped = Skipped()
    rows = read_rows(args.data, skipped)
    t0 = time.perf_counter()
    preds = label_reports([r.text for r in rows])
    seconds = time.perf_counter() - t0
    table = score(rows, preds)
    if args.json:
        print(
            json.dumps(
                {
                    "micro_f1": micro_f1(table),
                    "n_reports": len(rows),
                    "skipped_not_indexed": skipped.not_indexed,
                    "skipped_no_text": skipped.no_text,
                    "seconds": seconds,
                    "findings": table,
                },
                indent=2,
            )
        )
    else:
        print_table(table, len(rows), seconds)
        print(
            f"skipped: {skipped.not_indexed} reports never coded (No Indexing), "
            f"{skipped.no_text} with no findings/impression text"
        )
    if args.errors:
        print_errors(rows, preds, args.errors, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
