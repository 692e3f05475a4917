"""The README's headline: Table 1's reproduced cells beside the paper, with what each cost.

`dfarun-tables --compare` renders it into results/headline.md whenever it renders Table 1;
with `--readme FILE` it also replaces the part of FILE between the two markers below with it
(`make results` does that for README.md and results/README.md, from results/records/), and
tests/test_committed_results.py holds both copies to the committed records.

A cell's cost is summed over the jobs that trained its seeds (a job: one list of seeds on one
device; a rerun of the same list counts once). A job's time is its longest seed's epochs
times that seed's median epoch time: the median, because jobs were paused (SIGSTOP) while
benchmarks ran, and a paused epoch's seconds say nothing of the job. On a CPU that time is
multiplied by the job's threads (core time: a cost, not a benchmark); on a GPU it is not (GPU
time, with whatever else shared the GPU). A cell with a record that has no epoch times shows
"?" for them.
"""
from __future__ import annotations

import errno
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path

import pandas as pd

from dfarun.report import records
from dfarun.report.text import error_text, stop_words

BEGIN = "<!-- headline:begin (dfarun-tables --readme writes from here to the end marker) -->"
END = "<!-- headline:end -->"
HEADER = ["row", "method", "ours (test error)", "paper", "distance", "seeds", "epochs (mean)", "stop",
          "CPU time", "GPU time"]


def costs(recs: list) -> tuple[float, float]:
    """(CPU core seconds, GPU seconds) of the jobs that trained `recs`, one cell's records;
    NaN where a record has no epoch times (an older or hand-made record)."""
    jobs: dict[tuple, float] = defaultdict(float)
    for r in recs:
        seconds = [h.get("seconds") for h in r.history]
        if not seconds or not all(_is_seconds(s) for s in seconds):
            jobs[(r.seeds, r.device)] = math.nan
            continue
        on_cpu = r.device == "cpu"  # else the GPU's name, as runner writes it
        job = (r.seeds, r.device)
        jobs[job] = max(jobs[job], statistics.median(seconds) * r.epochs * (r.threads if on_cpu else 1))
    cpu = sum(s for (_, device), s in jobs.items() if device == "cpu")
    return cpu, sum(s for (_, device), s in jobs.items() if device != "cpu")


def _is_seconds(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def sigma(z: float) -> str:
    """A distance in paper std, signed, one decimal; never "-0.0" (rounding noise of a zero)."""
    return f"{round(z, 1) + 0.0:+.1f}"


def _minutes(seconds: float) -> str:
    if math.isnan(seconds):
        return "?"
    return "" if not seconds else "<1 min" if seconds < 60 else f"{seconds / 60:.0f} min"


def _seconds(seconds: float) -> str:
    return "?" if math.isnan(seconds) else f"{seconds:.0f} s" if seconds else ""


def render(numbers: pd.DataFrame, recs: list) -> str:
    """The headline of Table 1 from its CSV (`tables.numbers`) and the records that fill it:
    one line per cell with seeds, how many lie within 2 paper std, and which cells have none."""
    filled = {(row, method): rs for (dataset, row, method, frozen), rs in records.cells(recs).items()
              if dataset == "mnist" and not frozen}
    numbers = numbers[numbers.paper_status != "none"]  # the paper's cells: not a new rule's
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    within = compared = 0
    for n in numbers[numbers.seeds_run > 0].itertuples():
        cpu, gpu = costs(filled.get((n.row, n.method), []))
        distance = ""
        if pd.notna(n.distance_paper_std):
            distance = f"{sigma(n.distance_paper_std)} σ"
            compared += 1
            within += abs(n.distance_paper_std) <= 2
        paper = f"{n.paper_test_mean:.2f} ± {n.paper_test_std:.2f}%" if pd.notna(n.paper_test_mean) else "—"
        ours = error_text(n)  # as the table writes it, without the training error
        cells = [n.row, n.method.upper(), ours, paper, distance,
                 str(n.seeds_run), f"{n.epochs_mean:.0f}", stop_words(n.stop), _minutes(cpu), _seconds(gpu)]
        lines.append("| " + " | ".join(cells) + " |")
    summary = f"**{within} of {compared} cells lie within 2 paper std of the paper.**"
    if demos := int(numbers.demo.sum()) if "demo" in numbers else 0:  # text.py: short runs are not compared
        summary += f" {demos} demo cell{'s' * (demos != 1)} (stopped short of the protocol's epochs) not compared."
    return "\n".join([*lines, "", summary + _not_run(numbers), ""])


def _not_run(numbers: pd.DataFrame) -> str:
    """" Not run yet: the cell(s) ...; the row(s) ..." for the grid's cells without records."""
    ran = set(numbers.row[numbers.seeds_run > 0])
    cells = [f"{n.row} {n.method.upper()}" for n in numbers.itertuples() if n.row in ran and not n.seeds_run]
    rows = [r for r in dict.fromkeys(numbers.row) if r not in ran]
    parts = [f"the {kind}{'s' * (len(names) > 1)} {', '.join(names)}"
             for kind, names in (("cell", cells), ("row", rows)) if names]
    return f" Not run yet: {'; '.join(parts)}." if parts else ""


def splice(text: str, headline: str) -> str:
    """`text` (a README) with the lines between its BEGIN and END lines replaced by `headline`
    (line endings kept); ValueError unless it has exactly one of each, whole lines (spaces
    around them aside), in that order."""
    lines = text.split("\n")  # "\n" only: a form feed or U+2028 inside a line is no line break
    marker = lambda line: line.strip().lstrip("\ufeff").strip()
    begins = [i for i, line in enumerate(lines) if marker(line) == BEGIN]
    ends = [i for i, line in enumerate(lines) if marker(line) == END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        order = " (the end line first)" if len(begins) == len(ends) == 1 else ""
        raise ValueError(f"expected one line {BEGIN} and, below it, one line {END}; "
                         f"found {len(begins)} and {len(ends)}{order}")
    cr = "\r" if lines[begins[0]].endswith("\r") else ""  # a CRLF file stays CRLF
    body = [line + cr for line in headline.strip().splitlines()]
    return "\n".join(lines[:begins[0] + 1] + body + lines[ends[0]:])


def readme(name: str, headline: str, outputs: set[Path]) -> tuple[Path, str, int]:
    """(the file to write, its text with `headline` spliced in, its mode) for `--readme name`:
    a file (a symbolic link is written through, not replaced), none of this run's `outputs`,
    writable, UTF-8 with one pair of markers; its line endings and mode are kept."""
    path = Path(name).resolve()
    if not path.is_file():
        raise ValueError("expected a Markdown file with the headline's begin and end lines")
    if path in outputs:
        raise ValueError("is one of the tables this run writes")
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        raise PermissionError(errno.EACCES, "not writable (the file or its folder)")
    with open(path, encoding="utf-8", newline="") as f:
        return path, splice(f.read(), headline), path.stat().st_mode & 0o7777
