"""`portrait models list|verify|tiny`: what is present, what is missing and how to get it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import EXIT_OK, EXIT_USER, handle_errors, json_option, print_json, print_table, progress_bar


def _commercial(spec) -> str:
    return {True: "yes", False: "no", None: "check"}[spec.commercial_use]


def _row(manifest, status) -> dict:
    spec = status.spec
    row = {"name": spec.name, "kind": spec.kind, "state": status.state, "path": str(status.path),
           "licence": spec.licence, "commercial_use": _commercial(spec), "description": spec.description}
    if status.state in ("missing", "bad_hash"):
        row["fix"] = (status.message if status.state == "bad_hash"
                      else manifest.how_to_get(spec, status.path, list_hint=False))
        if status.message.startswith("folder"):
            row["fix"] = f"{status.message}. {row['fix']}"
    return row


def _print_table(rows: list[dict], title: str) -> None:
    """The models as a table (plain lines when piped), then each missing model's fix. Every text from the
    manifest is escaped: a hint such as `[models.sd15] path = ...` must not be read as rich markup."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colours = {"present": "green", "unchecked": "yellow", "missing": "red", "bad_hash": "red"}
    table = Table(title=title)
    for col in ("name", "kind", "state", "commercial", "licence", "path"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(escape(r["name"]), escape(r["kind"]), f"[{colours[r['state']]}]{r['state']}[/]",
                      r["commercial_use"], escape(r["licence"]), escape(r["path"]))
    console = Console(soft_wrap=True)  # lines are never cut at 80 columns when piped
    print_table(console, table)
    for r in rows:
        if "fix" in r:
            console.print(f"  [red]{escape(r['name'])}[/]: {escape(r['fix'])}", highlight=False, soft_wrap=True)


def register(group: click.Group) -> None:
    @group.group("models")
    def models() -> None:
        """The model manifest: list, verify hashes, build tiny test models."""

    @models.command("list")
    @click.option("--hashes", is_flag=True, help="Also check sha256 hashes (reads every file; see `verify`).")
    @json_option
    @handle_errors
    def list_cmd(hashes: bool, as_json: bool) -> None:
        """Every model the project can use: state, path, licence, commercial use, and the fix if missing.

        States: present, unchecked (present, no sha256 in the manifest), missing, bad_hash (only with
        --hashes). Folders are checked for their required members only.
        """
        from ..models.manifest import Manifest

        manifest = Manifest()
        rows = [_row(manifest, manifest.status(s.name, check_hash=hashes)) for s in manifest.all()]
        if as_json:
            print_json({"models_dir": str(manifest.models_dir), "config": str(manifest.config_file), "models": rows})
        else:
            _print_table(rows, f"Models in {manifest.models_dir}")
        sys.exit(EXIT_OK)

    @models.command("verify")
    @click.argument("names", nargs=-1)
    @json_option
    @handle_errors
    def verify_cmd(names: tuple[str, ...], as_json: bool) -> None:
        """Check sha256 hashes. With NAMEs, exit 2 if any of them is missing or bad; without, exit 2 if
        any present file has a bad hash (missing optional models are only listed)."""
        from ..models.manifest import Manifest

        manifest = Manifest()
        specs = [manifest.spec(n) for n in names] if names else manifest.all()
        rows = [_row(manifest, manifest.status(s.name, check_hash=True)) for s in specs]
        bad = [r for r in rows if r["state"] == "bad_hash" or (names and r["state"] == "missing")]
        present = [r for r in rows if r["state"] != "missing"]
        hashed = [r for r in present if r["state"] == "bad_hash" or manifest.spec(r["name"]).sha256]
        missing = len(rows) - len(present)
        if bad:
            verdict = f"{len(bad)} problem(s): {', '.join(r['name'] for r in bad)}"
        elif not present:
            verdict = ("nothing verified: none of the named models is present" if names else
                       f"nothing verified: no model is present in {manifest.models_dir}")
        elif not hashed:
            verdict = (f"nothing verified: none of the {len(present)} present model(s) has a sha256 to check "
                       "(set sha256 in models.toml)")
        else:
            verdict = f"{len(hashed)} model(s) match their sha256"
            if len(present) > len(hashed):
                verdict += f"; {len(present) - len(hashed)} present without a sha256 to check"
        if missing and not bad:
            verdict += f"; {missing} missing" + ("" if names else " (optional)")
        if as_json:
            print_json({"ok": not bad, "verified": len(hashed), "present": len(present), "message": verdict,
                        "models": rows})
        else:
            _print_table(rows, "Verified models")
            click.echo(verdict, err=True)
        sys.exit(EXIT_USER if bad else EXIT_OK)

    @models.command("convert")
    @click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.argument("dst", required=False, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--tensors-only", is_flag=True,
                  help="Keep only the tensors of a file that also holds other entries (numbers, strings), "
                       "naming what was dropped.")
    @json_option
    @handle_errors
    def convert_cmd(src: Path, dst: Path | None, tensors_only: bool, as_json: bool) -> None:
        """Convert a .pth / .bin weights file to .safetensors (read with torch.load(weights_only=True):
        a file holding anything but tensors is refused, never executed)."""
        from ..models.convert import convert_checkpoint

        done = convert_checkpoint(src, dst, tensors_only=tensors_only)
        if as_json:
            print_json({"src": str(src), **done.to_dict()})
            return
        if done.dropped:
            click.echo(f"dropped {len(done.dropped)} entr{'y' if len(done.dropped) == 1 else 'ies'} that "
                       f"{'is' if len(done.dropped) == 1 else 'are'} not tensors: {', '.join(done.dropped)}", err=True)
        click.echo(f"wrote {done.tensors} tensors to {done.dst}; point models.toml at it (path = \"{done.dst}\")")

    @models.command("tiny")
    @click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--id-dim", type=click.Choice(["128", "512"]), default="128", show_default=True,
                  help="Face-embedding size of the tiny IP-Adapter FaceID (128: dlib, 512: ArcFace).")
    @json_option
    @handle_errors
    def tiny_cmd(out_dir: Path, seed: int, id_dim: str, as_json: bool) -> None:
        """Build tiny random SD 1.5 / SDXL / ControlNet / FaceID models in OUT_DIR for smoke tests.

        Then `PORTRAIT_MODELS_DIR=OUT_DIR portrait models list` shows them present. They produce noise,
        not portraits: they prove the install and the code paths, quickly, offline.
        """
        from ..models.tiny import build_tiny_set

        with progress_bar(not as_json) as progress:
            built = build_tiny_set(out_dir, seed=seed, progress=progress, id_dim=int(id_dim))
        paths = {k: str(v) for k, v in built.items()}
        if as_json:
            print_json({"models_dir": str(out_dir), "models": paths})
        else:
            for k, v in paths.items():
                click.echo(f"{k:22s} {v}")
            click.echo(f"\nUse them with: PORTRAIT_MODELS_DIR={out_dir} portrait models list")
        sys.exit(EXIT_OK)
