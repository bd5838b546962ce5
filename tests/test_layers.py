"""The layers run one way (pyproject's import-linter contract): the real tree keeps it, and a back-edge
added to a copy of the tree breaks it, so the check can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [contract] = [c for c in config["contracts"] if c["type"] == "layers"]
    return [m.strip() for layer in contract["layers"] for m in layer.replace(":", "|").split("|")]


def test_every_portrait_module_has_a_layer():
    named = set(_layers())
    modules = {f"portrait.{p.stem}" for p in (ROOT / "portrait").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert modules <= named, f"modules outside the layers contract: {sorted(modules - named)}"


def test_the_tree_keeps_its_layers():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_a_back_edge_breaks_the_contract(tmp_path):
    for part in ("portrait", "preprocess"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    identity = tmp_path / "portrait" / "identity" / "lora_select.py"
    # The back-edge issue 9 removed: identity importing the generation stage (lazily, inside a function).
    identity.write_text(identity.read_text() + "\n\ndef _back_edge():\n"
                        "    from ..generate.template_jobs import template_validator\n\n"
                        "    return template_validator\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and "portrait.identity.lora_select" in proc.stdout
