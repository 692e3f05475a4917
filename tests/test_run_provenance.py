"""Which code made a record: dfarun's version always; in a checkout its commit, and the
uncommitted changes as a diff beside the record that `git apply` takes on a clean clone.

`provenance.code` runs on small git repositories made here, laid out as a checkout is (the
package in dfarun/, its configs in conf/), and as a wheel installed into a venv inside a
checkout; the runner's part (the diff beside each record, gone when the code is committed)
on the tiny synthetic set with `provenance.code` standing in for the checkout.
"""
from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import dfarun.run.provenance as provenance
from dfarun.run import store
from dfarun.run.runner import run_records

SMALL = "model=3x50_tanh"
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(where: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=where, check=True,
                          capture_output=True, text=True).stdout


def checkout(root: Path) -> Path:
    """A one-commit repository with dfarun/__init__.py, dfarun/train.py and conf/config.yaml."""
    (root / "dfarun").mkdir(parents=True)
    (root / "conf").mkdir()
    (root / "dfarun" / "__init__.py").write_text("")
    (root / "dfarun" / "train.py").write_text("LR = 1e-3\n")
    (root / "conf" / "config.yaml").write_text("max_epochs: 300\n")
    (root / "notes.txt").write_text("not code\n")
    (root / ".gitignore").write_text(".venv/\n__pycache__/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    return root


@needs_git
def test_a_clean_checkout_names_its_commit_and_has_no_diff(tmp_path):
    root = checkout(tmp_path / "repo")
    (root / "notes.txt").write_text("changed, but not code\n")   # outside dfarun/ and conf/
    (root / "dfarun" / "__pycache__").mkdir()
    (root / "dfarun" / "__pycache__" / "train.pyc").write_bytes(b"\0")  # ignored
    code = provenance.code(root / "dfarun", root / "conf")
    assert code.commit == git(root, "rev-parse", "HEAD").strip()
    assert code.diff == ""
    assert code.version == importlib.metadata.version("dfarun")


@needs_git
def test_uncommitted_changes_and_new_files_make_a_diff_that_git_apply_takes(tmp_path):
    root = checkout(tmp_path / "repo")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    (root / "dfarun" / "train.py").write_text("LR = 2e-3\n")
    (root / "conf" / "config.yaml").write_text("max_epochs: 20\n")
    (root / "dfarun" / "new.py").write_text("NEW = True\n")       # not yet added: code that ran all the same
    code = provenance.code(root / "dfarun", root / "conf")
    assert code.diff and "+LR = 2e-3" in code.diff and "+max_epochs: 20" in code.diff and "+NEW = True" in code.diff
    assert "notes.txt" not in code.diff

    (tmp_path / "code.diff").write_text(code.diff)
    git(clone, "apply", str(tmp_path / "code.diff"))
    for name in ("dfarun/train.py", "conf/config.yaml", "dfarun/new.py"):
        assert (clone / name).read_text() == (root / name).read_text()


def test_outside_a_checkout_there_is_no_commit_and_no_diff(tmp_path):
    (tmp_path / "site" / "dfarun").mkdir(parents=True)
    (tmp_path / "site" / "dfarun" / "__init__.py").write_text("")
    code = provenance.code(tmp_path / "site" / "dfarun", tmp_path / "site" / "dfarun" / "conf")
    assert (code.commit, code.diff) == (None, None)
    assert code.version == importlib.metadata.version("dfarun")


@needs_git
def test_a_wheel_installed_into_a_venv_inside_a_checkout_claims_no_commit_of_it(tmp_path):
    root = checkout(tmp_path / "repo")
    site = root / ".venv" / "lib" / "site-packages" / "dfarun"   # ignored by the checkout
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    assert provenance.code(site, site / "conf") == provenance.Code(importlib.metadata.version("dfarun"), None, None)


def test_the_diff_lies_beside_each_record_and_goes_when_the_code_is_committed(make_cfg, monkeypatch):
    version = importlib.metadata.version("dfarun")
    dirty = provenance.Code(version, "a" * 40, "diff --git a/dfarun/x.py b/dfarun/x.py\n+changed\n")
    monkeypatch.setattr(provenance, "code", lambda: dirty)
    cfg = make_cfg(SMALL, "seeds=[0,1]", "max_epochs=1")
    for rec in run_records(cfg):
        path = store.record_path(cfg, rec["seed"])
        assert (rec["git_commit"], rec["git_dirty"], rec["dfarun"]) == ("a" * 40, True, version)
        assert path.with_suffix(".diff").read_text() == dirty.diff
        assert json.loads(path.read_text()) == rec

    monkeypatch.setattr(provenance, "code", lambda: provenance.Code(version, "b" * 40, ""))
    for rec in run_records(make_cfg(SMALL, "seeds=[0,1]", "max_epochs=1", "force=true")):
        assert (rec["git_commit"], rec["git_dirty"]) == ("b" * 40, False)
        assert not store.record_path(cfg, rec["seed"]).with_suffix(".diff").exists()  # not the old code's

    monkeypatch.setattr(provenance, "code", lambda: provenance.Code(None, None, None))  # not installed, no checkout
    [rec] = run_records(make_cfg(SMALL, "seeds=[0]", "max_epochs=1", "force=true"))
    assert rec["git_commit"] is None and rec["git_dirty"] is None and rec["dfarun"] is None
