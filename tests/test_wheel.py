"""The package as a user installs it: a wheel, installed away from the checkout, run from
another folder. The other tests import dfarun from the checkout, so they cannot see a
file the wheel forgets (conf/ above all)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT, finish, record


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Build the wheel (no network: the venv's setuptools) and install it, without its
    dependencies (the venv has them), into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: setuptools' build/ folder in the checkout may hold stale files
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "runs", "results", "*.egg-info", "__pycache__", ".pytest_cache"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    [wheel] = (tmp / "dist").glob("dfarun-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for conf in (ROOT / "conf").rglob("*.yaml"):  # every config ships, under dfarun/conf/
        assert f"dfarun/conf/{conf.relative_to(ROOT / 'conf').as_posix()}" in names
    assert "dfarun/report/paper_results.csv" in names
    for py in (ROOT / "dfarun").rglob("*.py"):  # every module of every layer (pyproject lists the packages)
        assert f"dfarun/{py.relative_to(ROOT / 'dfarun').as_posix()}" in names
    assert "Warning" not in build.stderr, build.stderr  # a package or file setuptools would have to guess
    target = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                              str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return target


def installed_env(site: Path) -> dict[str, str]:
    """PYTHONPATH puts the wheel's copy of dfarun ahead of the checkout's editable install."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DFARUN_THREADS")}
    return {**env, "PYTHONPATH": str(site)}


def start_installed(site: Path, cwd: Path, *args: str) -> subprocess.Popen:
    """A console script of the installed wheel, started."""
    return subprocess.Popen([str(site / "bin" / args[0]), *args[1:]], cwd=cwd, env=installed_env(site),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_wheel_runs_a_job_and_renders_a_table_from_another_folder(installed, tmp_path):
    # three independent processes side by side (their start-up is one Python thread each)
    where = subprocess.Popen([sys.executable, "-c", "import dfarun.config.schema as c; print(c.CONF_DIR)"],
                             cwd=tmp_path, env=installed_env(installed), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    job = start_installed(installed, tmp_path, "dfarun", "dataset=synthetic", "model=3x50_tanh", "max_epochs=1",
                          "compile=false", "dataset.train_size=256", "dataset.test_size=128",
                          "dataset.features=16", "store=runs")
    figures = start_installed(installed, tmp_path, "dfarun-figures", "--help")
    where, out, figures = finish(where), finish(job), finish(figures)
    assert Path(where.stdout.strip()) == installed / "dfarun" / "conf"  # not the checkout's conf/
    assert out.returncode == 0, out.stderr
    [written] = (tmp_path / "runs").glob("*.json")
    rec = json.loads(written.read_text())
    assert rec["epochs"] == 1 and rec["config"]["model"]["name"] == "3x50_tanh"
    assert figures.returncode == 0 and "usage" in figures.stdout

    # the synthetic run fills no cell of the paper's tables: a Table 1 cell's record beside it
    (tmp_path / "runs" / "cell.json").write_text(json.dumps(record()))
    tables = finish(start_installed(installed, tmp_path, "dfarun-tables", "--store", "runs", "--out", "out",
                                    "--tables", "1", "--compare"))
    assert tables.returncode == 0, tables.stderr
    assert "| 2x800 Tanh" in (tmp_path / "out" / "table1.md").read_text()  # the paper's numbers came from the wheel
    assert (tmp_path / "out" / "headline.md").is_file()
