"""Data streaming memory: peak RSS of `honed data inspect` and `honed data prepare` as the file grows.

Writes synthetic JSONL files of N rows (default 20,000, 80,000 and 320,000) built from the WikiSQL training
rows in ../shared/data by cycling through them and making every row distinct (a row number appended to the
question, the table renamed on each further cycle), so duplicates never shrink the work. Each (mode, N) runs
in a fresh process, timed and measured by /usr/bin/time (or, where it is missing, by a tiny Python runner
that reports its child's rusage the same way). Both fork the measured process from a small one: a process
that reports its own `ru_maxrss` inherits the high-water mark of whatever spawned it, across exec.

Modes:
  stream        read_rows + check_row + clean_value + scrub (PII) over every row, nothing kept: the streaming
                path itself, whose memory must stay flat.
  inspect       honed data inspect --format template ... --no-near-duplicates: also loads the tokenizer,
                keeps token lengths as counts and a 16-byte digest per row for exact duplicates.
  inspect_near  the same with near-duplicate detection (its MinHash LSH index grows with the rows).
  prepare       honed data prepare on a recipe with the default prepare settings (exact and near dedup,
                PII redaction; rows are spooled to disk, per-row split metadata stays in memory).

    python bench/data_memory.py --quick     # 5,000 / 20,000 / 80,000 rows: about 9 minutes on 2 CPU cores
    python bench/data_memory.py             # 20,000 / 80,000 / 320,000 rows: about half an hour

Reported per (mode, N): wall seconds (the whole process: start-up, imports and tokenizer included) and peak
RSS. Per mode, between the smallest and largest N: the ratio of peak RSS, its growth per extra row, and the
marginal rows per second (extra rows over extra seconds, so without the fixed start-up cost). The last line
is `<mode>_rss_ratio=<largest/smallest> <mode>_kb_per_row=<KB of peak RSS per extra row>` for each mode run.

Peak RSS hides growth that stays below an earlier peak: the inspect modes peak at about 410 MB while loading
torch and the tokenizer, so inspect's per-row state (about 0.2 KB a row) shows only from roughly 100,000 rows.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wikisql_create_context" / "train.jsonl"
MODES = ("stream", "inspect", "inspect_near", "prepare")
FIELDS = ("question", "context", "answer")
PROMPT_TEMPLATE = "{context} {question}"
COMPLETION_TEMPLATE = "{answer}"
TIME = Path("/usr/bin/time")
HONED = [sys.executable, "-c", "import sys; from honed.cli.main import main; sys.exit(main())"]
# Stand-in for `/usr/bin/time -f '%e %M'` where it is missing: runs argv[1:] as its child, passes its output
# through and writes "<wall seconds> <child peak RSS in KB>" to stderr last, exiting with the child's code.
RUNNER = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "peak = peak // 1024 if sys.platform == 'darwin' else peak\n"
    "print(f'{time.perf_counter() - start:.2f} {peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)
_TABLE = re.compile(r"\btable_\w+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 / 20,000 / 80,000 rows.")
    parser.add_argument("--rows", type=int, nargs="+", help="Row counts to measure (default by --quick).")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="Modes to run.")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="JSONL with question/context/answer rows to build from."
    )
    parser.add_argument("--model", help="Tokenizer for inspect (default: the embedded model).")
    parser.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    parser.add_argument("--worker", choices=["stream"], help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(stream_rows(args.file)), flush=True)
        return
    sizes = sorted(args.rows or ([5_000, 20_000, 80_000] if args.quick else [20_000, 80_000, 320_000]))
    with tempfile.TemporaryDirectory(prefix="honed-data-memory-") as work:
        runs = run_bench(sizes, args.modes, args.data, Path(work), args.model)
    print("\n" + table(runs))
    found = growth(runs)
    print("\n" + growth_table(found))
    line = summary_line(found)
    if args.out:
        settings = {"rows": sizes, "modes": args.modes, "data": str(args.data), "model": args.model}
        args.out.write_text(
            json.dumps({"args": settings, "runs": runs, "growth": found, "summary": line}, indent=2) + "\n"
        )
    print(line)


def run_bench(
    sizes: list[int], modes: list[str], source: Path, work: Path, model: str | None = None
) -> list[dict]:
    """Measure every mode at every size, each in a fresh process; one dict per (mode, N), printed as it ends.

    Writes each size's data file (and prepare's recipe and output) under `work`, and removes them after.
    """
    if model is None and any(mode.startswith("inspect") for mode in modes):
        _warm_embedded_model()
    runs = []
    for n in sizes:
        folder = work / f"rows-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        data_file = folder / "data.jsonl"
        write_rows(source, n, data_file)
        for mode in modes:
            runs.append(measure(mode, data_file, folder, model))
            print(describe(runs[-1]), flush=True)
        shutil.rmtree(folder)
    return runs


# --- data ------------------------------------------------------------------------------------------------


def write_rows(source: Path, n: int, path: Path) -> None:
    """Write `n` distinct question/context/answer rows to `path`, cycling through `source`'s rows.

    Row i gets " (row i+1)" appended to its question; from the second cycle on, every `table_...` name in
    its context and answer also gets the cycle number, so copies differ in several words, not one.
    """
    base = _source_rows(source, n)
    with path.open("w", encoding="utf-8") as out:
        for number in range(n):
            row = _distinct(base[number % len(base)], number, number // len(base))
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _source_rows(source: Path, limit: int) -> list[dict[str, str]]:
    rows = []
    with source.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                rows.append({name: str(row[name]) for name in FIELDS if row.get(name) is not None})
            if len(rows) == limit:
                break
    if not rows or any(len(row) < len(FIELDS) for row in rows):
        raise SystemExit(f"{source}: needs JSONL rows with the fields {', '.join(FIELDS)}")
    return rows


def _distinct(row: dict[str, str], number: int, cycle: int) -> dict[str, str]:
    renamed = {
        name: _TABLE.sub(rf"\g<0>_v{cycle}", row[name]) if cycle else row[name]
        for name in ("context", "answer")
    }
    return {"question": f"{row['question']} (row {number + 1})", **renamed}


def write_recipe(folder: Path, data_file: Path) -> Path:
    """A recipe for `honed data prepare` over `data_file`, default prepare settings, output under folder."""
    recipe = {
        "name": "bench",
        "data": {
            "train": str(data_file.resolve()),
            "format": "template",
            "prompt_template": PROMPT_TEMPLATE,
            "completion_template": COMPLETION_TEMPLATE,
        },
        "eval": {"split": "train"},
        "prepare": {"output_dir": str((folder / "prepared").resolve())},
    }
    path = folder / "recipe.yaml"
    path.write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")  # JSON is YAML
    return path


# --- measuring -------------------------------------------------------------------------------------------


def measure(mode: str, data_file: Path, folder: Path, model: str | None = None) -> dict:
    """Run one mode over `data_file` in a fresh process; its wall seconds, peak RSS and what it reported."""
    with data_file.open(encoding="utf-8") as handle:
        rows = sum(1 for _ in handle)
    wall_s, peak_kb, stdout = timed(command(mode, data_file, folder, model))
    return {
        "mode": mode,
        "rows": rows,
        "wall_s": wall_s,
        "rows_per_s": rows / wall_s if wall_s else None,
        "peak_rss_mb": peak_kb / 1024,
        **_reported(mode, stdout),
    }


def command(mode: str, data_file: Path, folder: Path, model: str | None = None) -> list[str]:
    """The command line that runs `mode` over `data_file`."""
    if mode == "stream":
        return [sys.executable, str(Path(__file__).resolve()), "--worker", "stream", "--file", str(data_file)]
    if mode == "prepare":
        return [*HONED, "-q", "data", "prepare", str(write_recipe(folder, data_file)), "--json"]
    argv = [*HONED, "-q", "data", "inspect", str(data_file), "--format", "template"]
    argv += ["--prompt-template", PROMPT_TEMPLATE, "--completion-template", COMPLETION_TEMPLATE, "--json"]
    argv += ["--no-near-duplicates"] if mode == "inspect" else []
    return argv + (["--model", model] if model else [])


def timed(argv: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in KB, stdout) of `argv`, run as the child of a small process."""
    wrapper = [str(TIME), "-f", "%e %M"] if TIME.is_file() else [sys.executable, "-c", RUNNER]
    done = subprocess.run([*wrapper, *argv], capture_output=True, text=True)
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    if done.returncode != 0 or not re.fullmatch(r"[\d.]+ \d+", last):
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{' '.join(argv[:6])} ... failed (exit {done.returncode})")
    wall, peak = last.split()
    return float(wall), int(peak), done.stdout


def _reported(mode: str, stdout: str) -> dict:
    """What the run itself reported: rows processed and duplicates found (a check that rows are distinct)."""
    if mode == "stream":
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        return json.loads(lines[-1].removeprefix("RESULT "))
    report = json.loads(stdout)
    if mode == "prepare":
        dedup = next(step for step in report["steps"] if step["step"] == "dedup")["train"]
        return {"kept_rows": report["outputs"]["train"]["rows"], "duplicates": dedup}
    found = report["duplicates"]
    return {
        "rows_read": report["rows"],
        "duplicates": {"exact": found.get("exact", 0), "near": found.get("near", 0)},
    }


def _warm_embedded_model() -> None:
    """Convert the embedded model once (about 20 s the first time) so no measured run pays for it."""
    code = "from honed.models.load import resolve_base; resolve_base('smollm2-135m-instruct')"
    subprocess.run([sys.executable, "-c", code], check=True)


def stream_rows(path: str) -> dict:
    """The plain streaming path over every row (format check, cleaning, PII scan), keeping nothing."""
    from honed.config.prepare import PrepareConfig
    from honed.config.schema import DataConfig
    from honed.data.clean import clean_value, length_problem
    from honed.data.formats import RowError, check_row, row_text
    from honed.data.pii import scrub
    from honed.data.sources import read_rows

    data = DataConfig(
        train=path,
        format="template",
        prompt_template=PROMPT_TEMPLATE,
        completion_template=COMPLETION_TEMPLATE,
    )
    prepare = PrepareConfig()
    rows = malformed = with_pii = 0
    for item in read_rows(path):
        rows += 1
        try:
            if item.error:
                raise RowError(item.error)
            check_row(item.row, data.format, data)
        except RowError:
            malformed += 1
            continue
        cleaned, _ = clean_value(item.row, prepare.clean)
        length_problem(row_text(cleaned, data.format, data), prepare.clean)
        _, found = scrub(cleaned, prepare.pii.types, True)
        with_pii += bool(found)
    return {"rows_read": rows, "malformed": malformed, "rows_with_pii": with_pii}


# --- results ---------------------------------------------------------------------------------------------


def growth(runs: list[dict]) -> dict[str, dict]:
    """Per mode (measured at two sizes or more): peak RSS growth from the smallest N to the largest."""
    found = {}
    for mode in dict.fromkeys(run["mode"] for run in runs):
        measured = sorted((run for run in runs if run["mode"] == mode), key=lambda run: run["rows"])
        small, large = measured[0], measured[-1]
        extra_rows = large["rows"] - small["rows"]
        if extra_rows <= 0:
            continue
        extra_mb = large["peak_rss_mb"] - small["peak_rss_mb"]
        extra_s = large["wall_s"] - small["wall_s"]
        found[mode] = {
            "rows_from": small["rows"],
            "rows_to": large["rows"],
            "rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
            "mb_per_1k_rows": extra_mb / extra_rows * 1000,
            "kb_per_row": extra_mb * 1024 / extra_rows,
            # Throughput without the fixed start-up cost (imports, tokenizer) that wall_s includes.
            "marginal_rows_per_s": extra_rows / extra_s if extra_s > 0 else None,
        }
    return found


def summary_line(found: dict[str, dict]) -> str:
    """The bench's last line: per mode, the peak RSS ratio (largest/smallest N) and KB per extra row."""
    return " ".join(
        f"{mode}_rss_ratio={g['rss_ratio']:.2f} {mode}_kb_per_row={g['kb_per_row']:.3f}"
        for mode, g in found.items()
    )


def describe(run: dict) -> str:
    return (
        f"{run['mode']:>12} {run['rows']:>9,} rows  {run['wall_s']:7.1f} s  "
        f"peak RSS {run['peak_rss_mb']:7.1f} MB"
    )


def table(runs: list[dict]) -> str:
    lines = [f"{'mode':>12} {'rows':>9} {'wall s':>8} {'rows/s':>9} {'peak RSS MB':>12}"]
    for run in sorted(runs, key=lambda run: (MODES.index(run["mode"]), run["rows"])):
        lines.append(
            f"{run['mode']:>12} {run['rows']:>9,} {run['wall_s']:>8.1f} {run['rows_per_s'] or 0:>9,.0f} "
            f"{run['peak_rss_mb']:>12.1f}"
        )
    return "\n".join(lines)


def growth_table(found: dict[str, dict]) -> str:
    header = f"{'mode':>12} {'rows':>19} {'RSS ratio':>10} {'MB/1k rows':>11} {'KB/row':>8}"
    lines = [f"{header} {'marginal rows/s':>16}"]
    for mode, g in found.items():
        span = f"{g['rows_from']:,} -> {g['rows_to']:,}"
        lines.append(
            f"{mode:>12} {span:>19} {g['rss_ratio']:>10.2f} {g['mb_per_1k_rows']:>11.3f} "
            f"{g['kb_per_row']:>8.3f} {g['marginal_rows_per_s'] or 0:>16,.0f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
