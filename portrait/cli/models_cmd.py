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
    row.update(_source_fields(spec))
    if status.state in ("missing", "bad_hash"):
        row["fix"] = (status.message if status.state == "bad_hash"
                      else manifest.how_to_get(spec, status.path, list_hint=False))
        if status.message.startswith("folder"):
            row["fix"] = f"{status.message}. {row['fix']}"
    return row


def _source_fields(spec) -> dict:
    """source (repo, revision, files), size and pin state of a model's download, for list --json."""
    dl = spec.download
    if spec.bundled or dl is None:
        return {"source": {"note": spec.source, "bundled": spec.bundled}, "size": None, "pin": "bundled"
                if spec.bundled else "none"}
    pin = "pinned" if dl.pinned else ("manual" if not dl.automatic else f"missing (revision '{dl.revision}')")
    return {"source": {**dl.to_dict(), "note": spec.source}, "size": dl.size or None, "pin": pin}


def _print_sources(rows: list[dict]) -> None:
    """One line per model: where `portrait models fetch` gets it, its size and whether the revision is pinned."""
    for r in rows:
        src = r.get("source") or {}
        if r.get("pin") == "bundled":
            continue
        if src.get("automatic"):
            where = f"{src['repo']}@{src['revision'][:12]}" + (" (space)" if src.get("repo_type") == "space" else "")
            how = "fetch" if r["pin"] == "pinned" else f"fetch, pin {r['pin']}"
        else:
            where, how = src.get("url") or "no known download", "manual"
        click.echo(f"  {r['name']:26s} {how:32s} {r.get('size') or '?':>16s}  {where}")


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
            print_json({"models_dir": str(manifest.models_dir), "config": str(manifest.config_file), "models": rows,
                        "notes": manifest.notes})
        else:
            _print_table(rows, f"Models in {manifest.models_dir}")
            click.echo("\nSources (`portrait models fetch NAME` downloads those marked fetch):")
            _print_sources(rows)
            for note in manifest.notes:
                click.echo(f"note: {note}", err=True)
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

    @models.command("fetch")
    @click.argument("names", nargs=-1)
    @click.option("--all-for", "all_for", type=click.Choice(("sd15", "sdxl", "faces")), default=None,
                  help="Every model the recipe for that base (or the face stack) can use.")
    @click.option("--endpoint", default=None, envvar="HF_ENDPOINT", show_envvar=True,
                  help="Hub endpoint or mirror [default: https://huggingface.co].")
    @json_option
    @handle_errors
    def fetch_cmd(names: tuple[str, ...], all_for: str | None, endpoint: str | None, as_json: bool) -> None:
        """Download models from the Hugging Face Hub into the models folder, at the manifest's revision,
        resuming interrupted downloads and checking every file's sha256 (a mismatch is refused and
        nothing is kept). Models that cannot be fetched automatically print the URL and the steps.

        Exit 2 if a download fails, a hash is refused, or a named model must be fetched by hand. A Hub
        token (gated models) is read from HF_TOKEN or `huggingface-cli login`.
        """
        from ..errors import ConfigError
        from ..models.fetch import fetch_models, names_for
        from ..models.manifest import get_manifest

        wanted = list(names) + (list(names_for(all_for)) if all_for else [])
        if not wanted:
            raise ConfigError("name the models to fetch (see `portrait models list`) or pass --all-for sd15|sdxl|faces")
        manifest = get_manifest()

        def report(r) -> None:
            if as_json:
                return
            if r.state == "manual":
                click.echo(f"{r.name}: cannot be fetched automatically:\n  {r.message}", err=True)
                return
            for w in r.warnings:
                click.echo(f"{r.name}: warning: {w}", err=True)
            for f in r.files:
                pin = "" if f.pinned else " (sha256 from the server: no pin recorded)"
                click.echo(f"{r.name}: {f.state} {f.path} sha256 {f.sha256[:16]}…{pin}")

        with progress_bar(not as_json) as progress:
            results = fetch_models(manifest, wanted, endpoint=endpoint, progress=progress, on_result=report)
        manual = [r for r in results if r.state == "manual" and not manifest.available(r.name)]
        if as_json:
            print_json({"ok": not manual, "models_dir": str(manifest.models_dir),
                        "models": [r.to_dict() for r in results]})
        sys.exit(EXIT_USER if manual else EXIT_OK)

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
