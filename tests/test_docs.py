"""The docs stand on their own in a user's clone.

A clone has only what is committed: README.md and docs/*.md must not send the reader to files
that live outside the repository. The rules this file enforces:

1. Every relative link (`[text](target)`, `![alt](target)`, `[id]: target`) outside code
   points to a file or folder inside the repository, and a `#fragment` on a link to a
   Markdown file names one of its headings (GitHub's anchors).
2. The project machines' notes `REFERENCE.md` and `paper.md` are never named.
3. The project machines' shared folder (`../shared`, `/work/shared`) appears only as the
   offline copy of the data, `../shared/data/...`, in a paragraph (outside code) that says
   it is about the project machines: a side note, never an example. Examples (code blocks and
   inline code outside such a paragraph) use the user's own `data_dir`.

Also: the README links the protocol, and LICENSE and CITATION.cff are there and agree with
pyproject.toml.
"""
from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

DOCS = [ROOT / "README.md", ROOT / "results" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
FORBIDDEN_NAMES = ("REFERENCE.md", "paper.md")
SHARED = re.compile(r"(?:\.\./|/work/)shared\b(/[^\s`)'\"]*)?")
SIDE_NOTE = "project machines"


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT)) if ROOT in path.parents else path.name


def split_code(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, code-block lines); a fenced block's lines are blanked in the prose, so
    line numbers and paragraph breaks survive."""
    prose, code, fence = [], [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            prose.append("")
        elif fence is not None:
            if line.strip().startswith(fence) and set(line.strip()) <= {fence[0]}:
                fence = None
            else:
                code.append(line)
            prose.append("")
        else:
            prose.append(line)
    return prose, code


def paragraphs(lines: list[str]) -> list[str]:
    out, cur = [], []
    for line in lines + [""]:
        if line.strip():
            cur.append(line)
        elif cur:
            out.append("\n".join(cur))
            cur = []
    return out


def links(path: Path) -> list[str]:
    """Link targets of a Markdown file, outside code blocks and code spans."""
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    found = []
    for line in prose:
        m = REF_DEF.match(line)
        if m:
            found.append(m.group(1))
            continue
        found += INLINE_LINK.findall(CODE_SPAN.sub("", line))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces
    to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFC", text.strip().lower())
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_docs_exist():
    assert (ROOT / "docs" / "protocol.md").is_file()
    assert len(DOCS) >= 2


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_relative_links_resolve(path: Path):
    bad = []
    for target in links(path):
        if SCHEME.match(target):
            continue  # http(s), mailto: not ours to check offline
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if ROOT not in dest.parents and dest != ROOT:
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            bad.append(f"{target}: {dest.name} has no heading #{fragment}")
    assert not bad, f"{doc_id(path)}: broken links:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_no_files_from_outside_the_repository(path: Path):
    text = path.read_text(encoding="utf-8")
    for name in FORBIDDEN_NAMES:
        assert name.lower() not in text.lower(), (
            f"{doc_id(path)} names {name}, which a clone does not have; cite docs/protocol.md "
            f"or the paper (arXiv:1609.01596) instead")
    prose, code = split_code(text)
    for line in code:
        assert not SHARED.search(line), (
            f"{doc_id(path)}: an example uses the project machines' shared folder: {line.strip()!r}; "
            f"examples use the user's own data_dir")
    for para in paragraphs(prose):
        for m in SHARED.finditer(para):
            where = f"{doc_id(path)}: {m.group(0)!r} in {para[:80]!r}..."
            assert (m.group(1) or "").startswith("/data/"), (
                f"{where}: only the offline data copy (../shared/data/...) may be named")
            assert SIDE_NOTE in " ".join(para.lower().split()), (
                f"{where}: name the offline data copy only in a side note about the {SIDE_NOTE}")


def test_rules_catch_what_they_should(tmp_path: Path):
    """The checks above would fail on the mistakes they exist for."""
    doc = "See [it](missing.md), [ok](#real), `[code](nowhere.md)`.\n\n# Real\n\n```\n[x](gone.md)\n```\n"
    (tmp_path / "d.md").write_text(doc)
    assert links(tmp_path / "d.md") == ["missing.md", "#real"]
    assert anchors(tmp_path / "d.md") == {"real"}
    assert slug("Where each rule's error enters") == "where-each-rules-error-enters"
    assert slug("The `auto` learning-rate schedule") == "the-auto-learning-rate-schedule"
    example = "```bash\ndfarun data_dir=../shared/data/mnist\n```\n"
    assert SHARED.search(split_code(example)[1][0])
    assert SHARED.search("see ../shared/REFERENCE.md").group(1) == "/REFERENCE.md"


def test_readme_links_the_protocol():
    assert "](docs/protocol.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_license_and_citation():
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', pyproject).group(1)  # tomllib is 3.11+
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == "dfarun"
    assert str(cff["version"]) == version, "CITATION.cff's version must follow pyproject.toml's"
    paper = cff["preferred-citation"]
    assert paper["title"] == "Direct Feedback Alignment Provides Learning in Deep Neural Networks"
    assert any("1609.01596" in str(i["value"]) for i in paper["identifiers"])


def test_every_make_target_the_docs_name_exists():
    """`make X` in a doc is something a reader types: the Makefile must parse and have X
    (`make -n` prints the recipe without running it)."""
    named = sorted({m for doc in DOCS for m in re.findall(r"\bmake ([a-z][a-z0-9-]*)", doc.read_text())})
    assert "test" in named and "results" in named and "table1" in named
    for target in named:
        done = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (target, done.stderr)
        # a phony target that no rule builds (a pattern rule make skips for it) does nothing, with rc 0;
        # `install` may be up to date
        assert target == "install" or "Nothing to be done" not in done.stdout + done.stderr, target
