"""A non-editable install is a whole product: the wheel carries the bundled template packs, and the README's
run command works from a fresh venv outside the checkout (no `templates/` folder beside the package)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = {"astronaut-wide", "classic-bw", "duo", "navy-formal", "studio-grey", "warm-studio"}
SKIP = shutil.ignore_patterns(".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "out",
                              "samples", "output", ".git", ".device", ".schemathesis")


def readme_run_command() -> str:
    """The README's **Run** command, minus its install step (this test installs the wheel instead)."""
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"\*\*Run\*\*.*?```bash\n(.+?)\n```", readme, re.S).group(1).strip()
    install = "python3 -m venv .venv && .venv/bin/pip install -e . && "
    assert command.startswith(install), command
    return command[len(install):]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv, far from the checkout, holding the wheel built from a copy of the source tree. The
    dependencies come from this test run's environment (a path line, so its editable finder stays off)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(work / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    shutil.rmtree(source)  # nothing of the checkout is left to fall back on
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; "
                                   "print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel, = (work / "dist").glob("portrait-*.whl")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    return venv


def in_venv(venv: Path, cwd: Path, command: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", PORTRAIT_TEMPLATES_DIR=str(cwd / "user-templates"),
               PORTRAIT_STYLES_DIR=str(cwd / "user-styles"),
               PORTRAIT_MODELS_DIR=str(cwd / "models"))
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_wheel_ships_the_bundled_templates(wheel_venv, tmp_path):
    where = in_venv(wheel_venv, tmp_path, "python -c 'import portrait; print(portrait.__file__)'")
    assert str(wheel_venv) in where.stdout, where.stdout + where.stderr  # the wheel, not the checkout
    listed = in_venv(wheel_venv, tmp_path, "portrait templates list --json")
    assert listed.returncode == 0, listed.stderr
    names = {t["name"] for t in json.loads(listed.stdout)["templates"]}
    assert BUNDLED <= names
    styles = in_venv(wheel_venv, tmp_path, "portrait styles list --json")  # the style packs ship too
    assert styles.returncode == 0, styles.stderr
    found = json.loads(styles.stdout)["styles"]
    assert {"vintage-film", "watercolour", "formal-headshot"} <= {s["name"] for s in found} and len(found) >= 8
    assert all(str(wheel_venv) in s["directory"] for s in found)


@pytest.mark.slow
def test_the_readme_run_command_works_from_the_wheel(wheel_venv, tmp_path):
    command = readme_run_command().replace(".venv/bin/", "")  # the wheel's venv is first on PATH
    done = in_venv(wheel_venv, tmp_path, command)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert sorted(o["template"] for o in result["outputs"]) == ["navy-formal", "studio-grey"]
    for name in ("navy-formal", "studio-grey"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000
