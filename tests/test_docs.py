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
pyproject.toml. And for README.md and docs/*.md: every repository path and `python -m` module
they name exists, every key of their key tables is a config key with the default it says, and
the README stays under 200 lines with a line for each sub-package of dfarun/.
"""
from __future__ import annotations

import importlib.util
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


# --- the README is short, and what the docs name is there ---------------------------------

OWN_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a path in this repository as the docs write it: dfarun/engine/rules.py, conf/method/, ...
REPO_PATH = re.compile(r"(?<![\w/.~-])(?:dfarun|conf|scripts|tests|docs|results)/[^\s`)'\"\],;:|#]*")
MODULE = re.compile(r"python3? -m (dfarun(?:\.\w+)+)")


def named_paths(text: str) -> set[str]:
    """Repository paths named anywhere in a doc (prose, code spans, code blocks). A path with a
    placeholder or a glob (`conf/method/<name>.yaml`, `results/table1.*`) names no one file,
    and a command's redirect target (`> conf/method/mine.yaml`) is one the reader creates."""
    out = set()
    for m in REPO_PATH.finditer(text):
        path = m.group(0).rstrip(".")
        if any(c in path for c in "<*{…") or text[:m.start()].endswith("> "):
            continue
        out.add(path)
    return out


@pytest.mark.parametrize("path", OWN_DOCS, ids=doc_id)
def test_every_path_and_module_the_docs_name_exists(path: Path):
    """The tree moved once (dfarun/rules.py became dfarun/engine/rules.py): a doc that still
    names the old file sends the reader nowhere."""
    text = path.read_text(encoding="utf-8")
    missing = sorted(p for p in named_paths(text) if not (ROOT / p).exists())
    assert not missing, f"{doc_id(path)} names paths that do not exist: {missing}"
    gone = sorted(m for m in set(MODULE.findall(text)) if importlib.util.find_spec(m) is None)
    assert not gone, f"{doc_id(path)} runs modules that do not exist: {gone}"


def test_the_readme_is_read_in_five_minutes():
    """At most 200 lines, and its map of the code names every sub-package of dfarun/."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200, "README.md is over 200 lines: move the detail to docs/"
    packages = sorted(p.parent.name for p in (ROOT / "dfarun").glob("*/__init__.py"))
    assert set(packages) >= {"engine", "config", "run", "report", "cli"}
    for name in packages:
        assert f"`dfarun/{name}/`" in readme, f"the README's map of the code lacks dfarun/{name}/"


def key_tables(path: Path) -> list[tuple[list[str], str]]:
    """(keys, default cell) of each row of a `| key | default | ...` table outside code."""
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    rows, inside = [], False
    for line in prose:
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells[:2] == ["key", "default"]:
            inside = True
        elif not cells:
            inside = False
        elif inside and not set(cells[0]) <= set("-: "):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1]))
    return rows


def _as_written(value) -> str:
    """A config value as the docs write it (YAML's spelling)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace(" ", "")


def test_documented_keys_exist_with_their_defaults():
    """Every key in the README's and docs/usage.md's key tables is a key of the composed config
    (or a config group: row=, experiment=), and a default written as one value is the one a
    plain `dfarun` composes."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dfarun.config.schema import CONF_DIR
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("config"))  # interpolations left as written
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    defaults = {}
    for entry in yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            (group, option), = entry.items()
            defaults[group.removeprefix("optional ").removeprefix("override ")] = option
    tables = [(doc, row) for doc in (ROOT / "README.md", ROOT / "docs" / "usage.md") for row in key_tables(doc)]
    assert len(tables) >= 20, "no key tables found: the test reads nothing"
    bad = []
    for doc, (keys, default) in tables:
        values = re.findall(r"`([^`]+)`", default)
        for i, key in enumerate(keys):
            if key not in cfg and key not in groups:
                bad.append(f"{doc.name}: `{key}` is not a key")
                continue
            if len(values) != len(keys) or not re.fullmatch(r"(`[^`]+`(,\s*)?)+", default):
                continue  # a default in words ("data set's", "–")
            actual = defaults[key] if key in groups else cfg[key]
            if values[i] != _as_written(actual):
                bad.append(f"{doc.name}: `{key}` default `{values[i]}`, the config's is `{_as_written(actual)}`")
    assert not bad, "\n".join(bad)


def test_path_and_key_readers_catch_what_they_should(tmp_path: Path):
    text = ("`dfarun/rules.py`, dfarun/engine/step.py:sgd_step, [k](docs/usage.md#keys), ~/.cache/dfarun/data,\n"
            "conf/method/<name>.yaml, results/table1.*, and `echo 'name: x' > conf/method/x.yaml`.")
    assert named_paths(text) == {"dfarun/rules.py", "dfarun/engine/step.py", "docs/usage.md"}
    (tmp_path / "k.md").write_text("| key | default | meaning |\n|---|---|---|\n| `a`, `b` | `1`, `x` | |\n"
                                   "| `lr` | data set's | |\n\n| a | b |\n|---|---|\n| `c` | `2` |\n")
    assert key_tables(tmp_path / "k.md") == [(["a", "b"], "`1`, `x`"), (["lr"], "data set's")]
