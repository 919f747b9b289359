"""Score the rule-based labeller against the coded labels of Indiana University reports.

    python benchmarks/labeller.py [--dev PATH] [--test PATH] [--json] [--ci]
                                  [--errors FINDING] [--split dev|test] [--final] [--n 10]

The IU collection codes each report with MeSH terms (``Head/modifier/...``, ``;``
separated) and marks normal studies with ``Problems == "normal"``. MESH_MAP below maps
coded heads (optionally only with a given modifier) to casebase finding ids; a report is
a gold positive for a finding when any of its terms maps to it. "No Indexing" rows were
never coded and are skipped, and so are reports with no findings or impression text
(the coders labelled some of those "normal" from elsewhere; no text labeller can see
that, and casebase deliberately invents nothing for an empty report) — the count of
each is printed. The labeller reads the findings + impression text and
counts a finding as predicted when ``label_report`` says "present".

The dev split (``reports_dev.csv``) is what the lexicon and rules are tuned on; the test
split (``reports_test.csv``, uid % 5 == 0) is never read for tuning. Both are scored side
by side. ``--errors`` lists individual errors of the dev split; those of the test split
only with ``--split test --final``, once the rules are final.

``--ci`` adds a 95 % bootstrap interval (reports resampled with replacement) to each F1
of a class with enough positives and to micro-F1: with 30 to 60 positives a class's F1
moves by several points between samples, and a target close to the point estimate needs
that spread beside it.

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
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from casebase.synthesis import Mention
from casebase.synthesis import cues as cue_files
from casebase.synthesis.cues import STRICT, CueSet, load_cues
from casebase.synthesis.extract import extract_many, rollup
from casebase.synthesis.lexicon import load_lexicon

REPO_ROOT = Path(__file__).resolve().parents[1]

DATA_DIR = REPO_ROOT / ".." / "shared" / "data" / "iu_xray"
DEFAULT_DEV = DATA_DIR / "reports_dev.csv"
DEFAULT_TEST = DATA_DIR / "reports_test.csv"
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
    ("Opacity", "round", "nodule_mass"),  # the coders' way of saying "a nodular opacity"
    ("Density", "round", "nodule_mass"),
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


EVALUATED = sorted({f for _, _, f in MESH_MAP} | {"no_finding"})
OUTCOMES = ("tp", "fp", "fn")


def outcomes(rows: list[Row], predictions: list[dict[str, str]]) -> Iterator[tuple[int, str, str]]:
    """(report index, finding, "tp" | "fp" | "fn") for each evaluated finding a report was
    coded with or predicted present; every other pair is a true negative."""
    for i, (row, pred) in enumerate(zip(rows, predictions, strict=True)):
        for f in EVALUATED:
            found, coded = pred.get(f) == "present", f in row.gold
            if found or coded:
                yield i, f, "tp" if found and coded else "fp" if found else "fn"


def score(rows: list[Row], predictions: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    counts = {f: dict.fromkeys(OUTCOMES, 0) for f in EVALUATED}
    for _, f, kind in outcomes(rows, predictions):
        counts[f][kind] += 1
    table: dict[str, dict[str, float]] = {}
    for f in EVALUATED:
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


@dataclass
class Result:
    rows: list[Row]
    mentions: list[list[Mention]]
    preds: list[dict[str, str]]
    table: dict[str, dict[str, float]]
    skipped: Skipped
    seconds: float


def evaluate(path: Path, cues: CueSet | None = None) -> Result:
    """Label one split's reports and score them against the coders."""
    skipped = Skipped()
    rows = read_rows(path, skipped)
    lex = load_lexicon()
    t0 = time.perf_counter()
    mentions = list(extract_many([r.text for r in rows], cues=cues))
    preds = [rollup(ms, lex) for ms in mentions]
    seconds = time.perf_counter() - t0
    return Result(rows, mentions, preds, score(rows, preds), skipped, seconds)


# Device kinds the coders rarely code as a device (the lexicon counts them on purpose).
DEVICE_CONVENTION = ("sternotomy_wires", "surgical_clips", "orthopedic_hardware")


def conventions(result: Result) -> dict[str, Counter]:
    """Counts of the errors that come from a convention the lexicon keeps on purpose.

    ``hedged``: gold-positive findings the labeller calls uncertain, by the cue that
    hedged them ("or", "borderline", "possible" …; "(derived)" for no_finding, which is
    uncertain when another finding is); ``devices``: support_devices false positives by
    the device kinds the report mentions. Counts only, never sentences: they are printed
    for the test split too.
    """
    lex = load_lexicon()
    evaluated = set(result.table)
    hedged: Counter = Counter()
    devices: Counter = Counter()
    for row, ms, pred in zip(result.rows, result.mentions, result.preds, strict=True):
        for finding in evaluated & row.gold:
            if pred.get(finding) != "uncertain":
                continue
            cue = next(
                (
                    m.cue
                    for m in ms
                    if m.status == "uncertain"
                    and (m.finding == finding or finding in lex.ancestors(m.finding))
                ),
                None,
            )
            hedged[(cue or "(derived)", finding)] += 1
        if pred.get("support_devices") == "present" and "support_devices" not in row.gold:
            kinds = {m.finding for m in ms if m.status == "present"}
            conv = sorted(kinds & set(DEVICE_CONVENTION))
            devices[" + ".join(conv) if conv else "other devices"] += 1
    return {"hedged": hedged, "devices": devices}


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def print_conventions(results: dict[str, Result]) -> None:
    for name, r in results.items():
        conv = conventions(r)
        by_cue: dict[str, Counter] = defaultdict(Counter)
        for (cue, finding), n in conv["hedged"].items():
            by_cue[cue][finding] += n
        print(f"\n{name}: gold-positive findings the labeller calls uncertain, by cue")
        for cue, counts in sorted(by_cue.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
            detail = ", ".join(f"{f} {n}" for f, n in sorted(counts.items(), key=_by_count))
            print(f"  {cue!r:<24}{sum(counts.values()):>5}  ({detail})")
        print(f"{name}: support_devices false positives by the device kinds mentioned")
        for kinds, n in sorted(conv["devices"].items(), key=_by_count):
            print(f"  {kinds:<50}{n:>5}")


def print_tables(results: dict[str, Result]) -> None:
    """Per-class scores of each split side by side (n_pos, P, R, F1 per split)."""
    names = list(results)
    head = f"{'finding':<26}" + "".join(
        f"{'| ' + n + ' n_pos':>13}{'P':>7}{'R':>7}{'F1':>7}" for n in names
    )
    print(head)
    first = results[names[0]].table
    for f in sorted(first, key=lambda k: -first[k]["n_pos"]):
        cells = ""
        for n in names:
            v = results[n].table[f]
            mark = "*" if v["n_pos"] < MIN_POSITIVES else " "
            cells += (
                f"{v['n_pos']:>12}{mark}{v['precision']:>7.3f}{v['recall']:>7.3f}{v['f1']:>7.3f}"
            )
        print(f"{f:<26}{cells}")
    print(f"(* fewer than {MIN_POSITIVES} positives in that split: not in its micro-F1)")
    for n in names:
        r = results[n]
        print(
            f"{n}: micro-F1 over findings with >= {MIN_POSITIVES} positives "
            f"{micro_f1(r.table):.3f}; {len(r.rows)} reports labelled in {r.seconds:.2f} s; "
            f"skipped {r.skipped.not_indexed} never coded (No Indexing), "
            f"{r.skipped.no_text} with no findings/impression text"
        )


BOOTSTRAP_DRAWS = 2000


def bootstrap_f1(
    rows: list[Row], preds: list[dict[str, str]], *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95 % intervals of each evaluated finding's F1 and of micro-F1 ("micro") over
    findings with >= MIN_POSITIVES positives, resampling whole reports (a report's errors
    stay together, as they do when a split is drawn)."""
    import numpy as np

    column = {f: j for j, f in enumerate(EVALUATED)}
    # per report and finding: 1 in the column of its outcome (tp, fp or fn), else 0
    outcome = np.zeros((len(rows), len(EVALUATED), len(OUTCOMES)), dtype=np.int32)
    for i, f, kind in outcomes(rows, preds):
        outcome[i, column[f], OUTCOMES.index(kind)] = 1
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(rows), [1 / len(rows)] * len(rows), size=draws)
    counts = np.einsum("bi,ijk->bjk", weights, outcome)  # draws x findings x (tp, fp, fn)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]

    def f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
        denom = 2 * tp + fp + fn
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)

    def interval(values: np.ndarray) -> tuple[float, float]:
        low, high = np.percentile(values, [2.5, 97.5])
        return float(low), float(high)

    out = {f: interval(f1(tp[:, j], fp[:, j], fn[:, j])) for j, f in enumerate(EVALUATED)}
    whole = outcome.sum(0)  # the split itself: findings x (tp, fp, fn)
    big = whole[:, 0] + whole[:, 2] >= MIN_POSITIVES  # as micro_f1 picks them
    out["micro"] = interval(f1(tp[:, big].sum(1), fp[:, big].sum(1), fn[:, big].sum(1)))
    return out


def print_intervals(results: dict[str, Result]) -> None:
    print(f"\n95 % bootstrap intervals of F1 ({BOOTSTRAP_DRAWS} resamples of each split's reports)")
    names = list(results)
    print(f"{'finding':<26}" + "".join(f"{'| ' + n + ' F1':>14}{'interval':>16}" for n in names))
    intervals = {n: bootstrap_f1(results[n].rows, results[n].preds) for n in names}
    first = results[names[0]].table
    shown = [
        f
        for f in sorted(first, key=lambda k: -first[k]["n_pos"])
        if any(results[n].table[f]["n_pos"] >= MIN_POSITIVES for n in names)
    ]
    for f in ["micro", *shown]:
        cells = ""
        for n in names:
            point = micro_f1(results[n].table) if f == "micro" else results[n].table[f]["f1"]
            low, high = intervals[n][f]
            cells += f"{point:>14.3f}{f'{low:.3f}-{high:.3f}':>16}"
        print(f"{f:<26}{cells}")


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
    from casebase.synthesis import LABELLER_VERSION

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV, help="dev reports CSV")
    parser.add_argument("--test", type=Path, default=DEFAULT_TEST, help="test reports CSV")
    parser.add_argument("--json", action="store_true", help="print the tables as JSON")
    parser.add_argument("--ci", action="store_true", help="add 95%% bootstrap intervals of each F1")
    parser.add_argument("--errors", metavar="FINDING", help="print false positives/negatives")
    parser.add_argument("--split", choices=["dev", "test"], default="dev", help="for --errors")
    parser.add_argument(
        "--final", action="store_true", help="rules are final: allow listing test errors"
    )
    parser.add_argument("--n", type=int, default=10, help="errors to print per kind")
    cue_source = parser.add_mutually_exclusive_group()
    cue_source.add_argument(
        "--cues", type=Path, help="score with this cue file instead of the packaged cues.yaml"
    )
    cue_source.add_argument(
        "--convention",
        choices=cue_files.conventions(),
        default=STRICT,
        help="read the packaged cues under a coding convention (casebase relabel "
        "--convention; conventions.yaml): iu-coders codes both findings of 'A or B' and "
        "borderline findings present, as these coders do",
    )
    args = parser.parse_args(argv)
    if args.errors and args.split == "test" and not args.final:
        print(
            "error: errors of the test split are listed only with --final, once the rules "
            "are final (reading them while tuning makes the test number meaningless)",
            file=sys.stderr,
        )
        return 2
    paths = {"dev": args.dev, "test": args.test}
    for path in paths.values():
        if not path.is_file():
            print(f"error: no such file: {path}", file=sys.stderr)
            return 2
    cues = load_cues(args.cues) if args.cues else None
    origin = f"cues from {args.cues}" if args.cues else None
    if args.convention != STRICT:
        cues = load_cues(convention=args.convention)
        origin = f"the {args.convention} convention (--convention {args.convention})"
    results = {name: evaluate(path, cues) for name, path in paths.items()}
    if args.json:
        print(
            json.dumps(
                {
                    "labeller": LABELLER_VERSION,
                    "cues": origin or "packaged",
                    **{
                        name: {
                            "micro_f1": micro_f1(r.table),
                            "n_reports": len(r.rows),
                            "skipped_not_indexed": r.skipped.not_indexed,
                            "skipped_no_text": r.skipped.no_text,
                            "seconds": r.seconds,
                            "findings": r.table,
                            **({"f1_intervals": bootstrap_f1(r.rows, r.preds)} if args.ci else {}),
                        }
                        for name, r in results.items()
                    },
                },
                indent=2,
            )
        )
    else:
        print(f"labeller {LABELLER_VERSION}" + (f", {origin}" if origin else ""))
        print_tables(results)
        if args.ci:
            print_intervals(results)
        print_conventions(results)
    if args.errors:
        r = results[args.split]
        print_errors(r.rows, r.preds, args.errors, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
