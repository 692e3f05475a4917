"""How every report writes a cell (a group of seeds' test error) and a table, so that the
paper's tables, `dfarun-tables --by`, the headline and the figures' small tables say the same
thing the same way.

An honest cell: mean ± std (ddof 1) over the seeds that learned; `n=1` and no std where one
did (one seed has no spread); `n=k` where fewer learned than were asked for; `—` where none
did; `demo` where a seed stopped at a shorter epoch budget than the protocol's before it
converged (records.short): its numbers say how far a short run got, not what the protocol
reaches, so the tables give it no distance from the paper.
"""
from __future__ import annotations

import datetime as dt
import math

import pandas as pd
from tabulate import tabulate

from dfarun.report import records

DASH = "—"
DEMO = "demo"


def error_text(c, decimals: int = 2, bracket_above: float = math.inf, unit: str = "%") -> str:
    """The test error of a cell `c` (records.summary's fields, as attributes): e.g.
    "1.63 ± 0.03%", "1.39 ± 0.07% (0.48%)" (training error in brackets above `bracket_above`),
    "8.13% n=1 demo", "—"."""
    if not c.seeds_learned:
        text = DASH
    else:
        text = f"{c.test_mean:.{decimals}f}"
        if c.seeds_learned > 1:
            text += f" ± {c.test_std:.{decimals}f}"
        text += unit
        if c.train_mean > bracket_above:
            text += f" ({c.train_mean:.2f}%)"
        if c.seeds_learned == 1 or c.seeds_learned < c.seeds_asked:
            text += f" n={c.seeds_learned}"
    return f"{text} {DEMO}" if c.demo else text


def legend_extras(cells, demo: str | None = None) -> list[str]:
    """The legend's words for what only some tables show (n=1, demo): [] where none is shown,
    so that a table without them reads as it always has. `demo`: what a demo is in this view
    (a --by view says its budget, demo_words); the paper's tables say why it has no distance."""
    cells = list(cells)
    out = []
    if any(c.seeds_learned == 1 for c in cells):
        out.append("n=1: one seed learned, so no std")
    if any(c.demo for c in cells):
        out.append(f"{DEMO}: " + (demo or "a seed stopped at a shorter epoch budget than the protocol's before it "
                                  "converged (a demo run: no distance from the paper)"))
    return out


def demo_budget(recs) -> tuple[str, str] | None:
    """The epoch budgets the demo seeds among `recs` (records.short) stopped at and the
    protocol's caps they fell short of, as text ("5", "300"; "5/20" where they differ); None
    where no seed is a demo."""
    short = [r for r in recs if records.short(r)]
    if not short:
        return None
    span = lambda numbers: "/".join(str(n) for n in sorted(set(numbers)))
    return span(r.max_epochs for r in short), span(records.cap(r) for r in short)


def demo_words(recs) -> str | None:
    """A demo in a --by view, by its budget: "stopped at max_epochs=5, short of the protocol's
    300 epochs, before converging"; None where no seed is a demo."""
    if (budget := demo_budget(recs)) is None:
        return None
    return f"stopped at max_epochs={budget[0]}, short of the protocol's {budget[1]} epochs, before converging"


def stop_words(stop: str) -> str:
    """A group's stop counts (records.stop_text, "converged:2 max_epochs:1", the CSV's) for
    people: "converged ×2, max_epochs ×1", which reads as a count, not as a setting."""
    return ", ".join(f"{reason} ×{n}" for reason, n in (part.rsplit(":", 1) for part in stop.split()))


# --- tables ----------------------------------------------------------------------------------------

def files(title: str, parts: list, footer: list[str], numbers: pd.DataFrame) -> dict[str, str]:
    """A table's three files: Markdown and LaTeX (the title, `parts`: tables and the lines
    between them, then `footer` as a list) and the CSV of `numbers`."""
    md = [f"### {title}", ""]
    tex = "".join(f"% {line}\n" for line in [title, *footer])
    for part in parts:
        md += [markdown(part) if isinstance(part, pd.DataFrame) else part, ""]
        tex += booktabs(part) if isinstance(part, pd.DataFrame) else f"% {part}\n"
    md = "\n".join([*md, *[f"- {n}" for n in footer], ""])
    return {"md": md, "tex": tex, "csv": numbers.to_csv(index=False, float_format="%.6g")}


def generated() -> str:
    return f"Generated {dt.date.today().isoformat()} by dfarun-tables."


def markdown(frame: pd.DataFrame) -> str:
    return tabulate(frame, headers="keys", tablefmt="github", showindex=False)


def booktabs(frame: pd.DataFrame) -> str:
    """A booktabs tabular (\\toprule, \\midrule, \\bottomrule); cells escaped for LaTeX."""
    line = lambda cells: " & ".join(latex(str(c)) for c in cells) + r" \\"
    body = [line(frame.columns), r"\midrule", *(line(r) for r in frame.itertuples(index=False))]
    return "\n".join([rf"\begin{{tabular}}{{{'l' * len(frame.columns)}}}", r"\toprule", *body, r"\bottomrule",
                      r"\end{tabular}", ""])


# one pass, so that no replacement's own braces or dollars are escaped again
LATEX = str.maketrans({"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
                       "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                       "±": r"$\pm$", "σ": r"$\sigma$", "×": r"$\times$", DASH: "---"})


def latex(text: str) -> str:
    return text.translate(LATEX)
