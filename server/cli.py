"""The service's commands, registered into `portrait` through the `portrait.commands` entry point
(so `portrait/` never imports `server/`): serve, worker, tenant create|list|revoke, migrate.

Heavy imports (Flask, SQLAlchemy, Celery) happen inside the commands: a core install without the
`server` extra still runs every other command, and these say what to install.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Optional

import click

DATA_DIR_HELP = "data folder (database, photos, results); env PORTRAIT_DATA_DIR"


class UserError(click.ClickException):
    exit_code = 2  # the project's exit code for errors a user can act on


def _settings(data_dir: Optional[str], **extra):
    try:
        from .settings import Settings
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UserError(f"the server needs the `server` extra: pip install 'portrait[server]' ({exc})")
    cfg = {k: v for k, v in extra.items() if v is not None}
    if data_dir:
        cfg["data_dir"] = data_dir
    try:
        return Settings.load(cfg)
    except Exception as exc:
        raise UserError(str(exc))


def _service(data_dir: Optional[str]):
    from .errors import ServiceError
    from .service import Service

    try:
        return Service(_settings(data_dir))
    except ServiceError as exc:
        raise UserError(exc.message)


def register(cli: click.Group) -> None:
    cli.add_command(serve)
    cli.add_command(worker)
    cli.add_command(tenant)
    cli.add_command(migrate)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: all)")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="port to listen on; 0 picks a free one (the 'listening on' line names it)")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.option("--workers", default=None, type=int,
              help="server processes (default: the CPU count, at most 4)")
@click.option("--threads", default=8, show_default=True, type=int,
              help="request threads per process (progress streams need none: they are coroutines)")
def serve(host: str, port: int, data_dir: Optional[str], workers: Optional[int], threads: int) -> None:
    """Run the web server (REST API, web form, /metrics) under uvicorn.

    Jobs are run by `portrait worker` processes, never by the server."""
    if workers is None:  # Python serves requests on one core per process: one process per core
        workers = max(1, min(4, os.cpu_count() or 1))
    settings = _settings(data_dir)
    from .asgi import THREADS_ENV

    os.environ["PORTRAIT_DATA_DIR"] = str(settings.data_dir)  # every server process builds the same app
    os.environ[THREADS_ENV] = str(max(1, threads))
    from .db import Database

    Database(settings.db_url).migrate()  # once, before any process serves
    from .logs import setup_logging

    setup_logging()
    _raise_open_files()
    click.echo(f"portrait: serving (data in {settings.data_dir}, "
               f"{'celery ' + settings.broker_url if settings.fleet else 'embedded queue'})", err=True)
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                backlog=2048)
    sock.set_inheritable(True)
    _listening(host, sock.getsockname()[1])  # bound: with --port 0, the port it got
    config = uvicorn.Config("server.asgi:create_asgi", factory=True, workers=workers, access_log=False,
                            log_config=None, timeout_keep_alive=5, timeout_graceful_shutdown=5, backlog=2048,
                            server_header=False)
    if workers <= 1:
        uvicorn.Server(config).run(sockets=[sock])
    else:
        Multiprocess(config, sockets=[sock]).run()


def _raise_open_files() -> None:
    """Each open progress stream is a socket: lift the soft open-file limit to the hard one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass


def _listening(host: str, port: int) -> None:
    click.echo(f"portrait: listening on http://{host}:{port}", err=True)


@click.command()
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.option("--device", default="cpu", show_default=True, help="device for the models: cpu, cuda, cuda:N")
@click.option("--max-jobs", default=None, type=int, help="exit after this many jobs (embedded queue)")
@click.option("--idle-exit", default=None, type=float, help="exit after this many idle seconds (embedded queue)")
def worker(data_dir: Optional[str], device: str, max_jobs: Optional[int], idle_exit: Optional[float]) -> None:
    """Run jobs: one worker process per GPU (`--device cuda:N`). Embedded queue by default; with
    PORTRAIT_BROKER_URL=redis://... a Celery worker (prefetch 1, late acks)."""
    settings = _settings(data_dir)
    from .logs import setup_logging
    from .worker import Worker

    setup_logging()
    w = Worker(settings, device=device)

    def _stop(signum, _frame):  # finish the current job, then exit
        w.stop_event.set()

    if not settings.fleet:
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        w.run_forever(max_jobs=max_jobs, idle_exit=idle_exit)
        return
    _celery_worker(w, settings)


def _celery_worker(w, settings) -> None:
    from .queue.celery_app import make_celery, set_runner

    app = make_celery(settings)
    set_runner(w.run_claimed)
    w.register()
    w.maintenance(force=True)
    w.start_maintenance()  # reap dead leases (and republish them), webhooks, retention
    try:
        app.worker_main(["worker", "--pool=solo", "--concurrency=1", "--prefetch-multiplier=1",
                         "--without-gossip", "--without-mingle", "--without-heartbeat",
                         f"--queues={settings.queue_name}", "--loglevel=WARNING",
                         f"--hostname=portrait-{os.getpid()}@%h"])
    finally:
        w.stop_event.set()
        w.unregister()


@click.group()
def tenant() -> None:
    """Tenants and their API keys."""


@tenant.command("create")
@click.argument("name")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.option("--retention-days", type=float, default=None, help="delete idle identities after this (default 30)")
@click.option("--concurrency", type=int, default=None, help="running jobs at once for this tenant")
@click.option("--webhook-url", default=None, help="POSTed to when any of this tenant's jobs ends")
def tenant_create(name: str, data_dir: Optional[str], retention_days, concurrency, webhook_url) -> None:
    """Create a tenant; prints its API key (shown once) as the last word of the last line."""
    from .errors import ServiceError

    svc = _service(data_dir)
    try:
        t, key = svc.create_tenant(name, retention_days=retention_days, concurrency=concurrency,
                                   webhook_url=webhook_url)
    except ServiceError as exc:
        raise UserError(exc.message)
    click.echo(f"tenant {t['name']} ({t['id']}); webhook secret {svc.webhook_secret(t['id'])}")
    click.echo("API key (shown once, store it now): " + key)


@tenant.command("key")
@click.argument("name")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
def tenant_key(name: str, data_dir: Optional[str]) -> None:
    """Add an API key to a tenant; prints it as the last word."""
    from .errors import ServiceError

    svc = _service(data_dir)
    try:
        t = svc.find_tenant(name)
        key = svc.create_key(t["id"])
    except ServiceError as exc:
        raise UserError(exc.message)
    click.echo("API key (shown once, store it now): " + key)


@tenant.command("list")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def tenant_list(data_dir: Optional[str], as_json: bool) -> None:
    """Tenants with their keys (prefixes only: keys are stored hashed)."""
    tenants = _service(data_dir).list_tenants()
    if as_json:
        click.echo(json.dumps(tenants, indent=2))
        return
    if not tenants:
        click.echo("no tenants (create one with `portrait tenant create NAME`)")
    for t in tenants:
        live = [k for k in t["keys"] if not k["revoked"]]
        click.echo(f"{t['name']}\t{t['id']}\tretention {t['retention_days']:g} d\tconcurrency {t['concurrency']}\t"
                   f"{len(live)} active key(s)")
        for k in t["keys"]:
            click.echo(f"    {k['prefix']}…\t{k['id']}\t{'revoked' if k['revoked'] else 'active'}\t"
                       f"created {k['created_at']}")


@tenant.command("revoke")
@click.argument("name_or_key")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
def tenant_revoke(name_or_key: str, data_dir: Optional[str]) -> None:
    """Revoke one key (by its id, prefix or the key) or every key of a tenant (by name or id)."""
    from .errors import ServiceError

    try:
        n = _service(data_dir).revoke(name_or_key)
    except ServiceError as exc:
        raise UserError(exc.message)
    click.echo(f"revoked {n} key(s)")


@click.command()
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
def migrate(data_dir: Optional[str]) -> None:
    """Apply the database migrations (also done whenever the server or a worker starts)."""
    from .db import Database

    settings = _settings(data_dir)
    rev = Database(settings.db_url).migrate()
    click.echo(f"database at revision {rev}")


def main() -> None:  # `python -m server.cli` (tests use `python -m portrait`)
    grp = click.Group("portrait")
    register(grp)
    grp(prog_name="portrait")


if __name__ == "__main__":
    main()
    sys.exit(0)
