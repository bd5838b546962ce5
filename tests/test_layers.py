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


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _layers(package: str) -> list[str]:
    [contract] = [c for c in _contracts() if c["type"] == "layers" and c["layers"][-1].startswith(package + ".")]
    return [m.strip() for layer in contract["layers"] for m in layer.replace(":", "|").split("|")]


def _modules(package: str) -> set[str]:
    return {f"{package}.{p.stem}" for p in (ROOT / package).iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}


def test_every_portrait_and_server_module_has_a_layer():
    for package in ("portrait", "server"):
        missing = _modules(package) - set(_layers(package))
        assert not missing, f"{package} modules outside its layers contract: {sorted(missing)}"


def test_the_tree_keeps_its_layers():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(_contracts())} kept, 0 broken" in proc.stdout


def _copy_tree(tmp_path: Path) -> None:
    for part in ("portrait", "preprocess", "server"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")


def test_the_library_importing_the_service_breaks_the_contract(tmp_path):
    _copy_tree(tmp_path)
    faces = tmp_path / "preprocess" / "dataset.py"
    faces.write_text(faces.read_text() + "\n\ndef _up():\n    from server.settings import Settings\n\n    return Settings\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "the library never imports the service BROKEN" in proc.stdout


def test_the_web_form_importing_the_api_breaks_the_server_layers(tmp_path):
    _copy_tree(tmp_path)
    views = tmp_path / "server" / "web" / "views.py"
    views.write_text(views.read_text() + "\n\ndef _side():\n    from ..api import routes\n\n    return routes\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "server layers BROKEN" in proc.stdout and "server.web.views" in proc.stdout


def test_a_back_edge_breaks_the_contract(tmp_path):
    _copy_tree(tmp_path)
    identity = tmp_path / "portrait" / "identity" / "lora_select.py"
    # A back-edge once removed: identity importing the generation stage (lazily, inside a function).
    identity.write_text(identity.read_text() + "\n\ndef _back_edge():\n"
                        "    from ..templates.painting import template_validator\n\n"
                        "    return template_validator\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and "portrait.identity.lora_select" in proc.stdout


def _circles(graph) -> list[list[str]]:
    """Groups of modules that import each other round a circle (strongly connected, more than one)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:  # Tarjan's algorithm (the graph is a few hundred modules: recursion is fine)
        order[m] = low[m] = len(order)
        stack.append(m)
        for n in graph.find_modules_directly_imported_by(m):
            if n not in order:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in stack:
                low[m] = min(low[m], order[n])
        if low[m] == order[m]:
            group = []
            while True:
                n = stack.pop()
                group.append(n)
                if n == m:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in sorted(graph.modules):
        if m not in order:
            visit(m)
    return found


def test_no_two_files_import_each_other_round_a_circle():
    """Type-checking and lazy imports count too (grimp sees both): a circle is a circle for a reader."""
    import grimp

    graph = grimp.build_graph("portrait", "preprocess", "server")
    assert _circles(graph) == []
    graph.add_import(importer="portrait.models.licence", imported="portrait.models.manifest")  # the old one
    assert ["portrait.models.licence", "portrait.models.manifest"] in _circles(graph)


def test_no_service_file_is_over_400_lines():
    """A newcomer reads a server module in one sitting (docs/design.md would name any exception and why)."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "server").rglob("*.py")
            if "migrations" not in p.parts and (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
