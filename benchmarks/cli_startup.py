"""How long a `casebase` command takes before it does anything, against `python -c pass`.

A command that answers a search in 2 ms should not cost seconds to start. This times,
as fresh processes (wall clock, ``--repeats`` runs each, after one unmeasured warm-up):

- ``python -c pass``: the interpreter's own floor;
- ``casebase --help``: importing the entry point and building every parser;
- ``casebase search --study ID -k 5``: start, connect, schema check, one search;
- ``casebase search --text ... -k 5``: the same plus encoding the text, which needs the
  model (torch + open_clip imported, the tiny-random model built): that part dominates.

It sets up its own database under its own ``CASEBASE_HOME`` (a temporary folder unless
``--home``): the embedded server, the generated demo cohort (``casebase.cohort``) loaded
with the ``tiny-random`` model. The server is stopped at the end unless ``--keep``.

Run from the repository root::

    python benchmarks/cli_startup.py --repeats 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = "DEMO-C0007"
TEXT = "left pleural effusion"


def setup(home: Path) -> None:
    """Start the embedded server under ``home`` and load a small cohort (idempotent)."""
    from casebase.cohort import generate
    from casebase.config import load_settings
    from casebase.db import migrate
    from casebase.db.connection import checked_url
    from casebase.ingest.pipeline import IngestOptions, ingest

    url = checked_url(load_settings())
    migrate.upgrade(url)
    manifest = home / "cohort" / "manifest.csv"
    if not manifest.exists():
        generate(manifest.parent, n_chest=60, n_knee=20, seed=0)
    options = IngestOptions(batch="startup", model="tiny-random", workers=0, progress=False)
    ingest(manifest, options, url=url)


def casebase_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "casebase"
    return [str(script)] if script.exists() else [sys.executable, "-m", "casebase.cli"]


def time_runs(argv: list[str], env: dict[str, str], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` runs (after one warm-up); a failing run stops the bench."""
    runs = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
        if i:
            runs.append(elapsed)
    return runs


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--home", type=Path, help="CASEBASE_HOME to use (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="leave the server running")
    args = parser.parse_args(argv)

    home = args.home or Path(tempfile.mkdtemp(prefix="casebase_startup_"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["CASEBASE_HOME"] = str(home)
    for var in ("DATABASE_URL", "CASEBASE_DATABASE_URL"):
        os.environ.pop(var, None)
    env = dict(os.environ)
    casebase = casebase_command()
    cases = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("casebase --help", [*casebase, "--help"]),
        (
            f"casebase search --study {STUDY} -k 5",
            [*casebase, "search", "--study", STUDY, "-k", "5"],
        ),
        (
            f"casebase search --text '{TEXT}' --modality CXR -k 5",
            [*casebase, "search", "--text", TEXT, "--modality", "CXR", "-k", "5"],
        ),
    ]
    print(f"setting up under {home} ...", file=sys.stderr)
    setup(home)
    try:
        results = [(name, time_runs(argv_, env, args.repeats)) for name, argv_ in cases]
    finally:
        if not args.keep:
            from casebase.config import load_settings
            from casebase.db import embedded

            embedded.stop(load_settings().embedded_dir)

    floor = statistics.median(results[0][1])
    load = os.getloadavg()
    print(
        f"{args.repeats} runs each, wall seconds; load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    width = max(len(name) for name, _ in results)
    print(f"{'command':<{width}} {'median':>8} {'p95':>8} {'ratio':>7}")
    for name, runs in results:
        median = statistics.median(runs)
        print(f"{name:<{width}} {median:>8.3f} {p95(runs):>8.3f} {median / floor:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
