"""The fleet dispatcher: Celery with Redis as the broker.

acks_late + reject_on_worker_lost: a task is acknowledged only after it ran, and one whose worker
process died is delivered again; prefetch 1: a worker holds one job at a time; the Redis visibility
timeout is above the longest training job, so a long job is not redelivered while it runs. The task
itself only claims the job row and runs it (`server.worker.Worker.run_claimed`): the row decides.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..settings import Settings

TASK_NAME = "portrait.run_job"

# Set by `portrait worker` in the worker process: job id -> None. Celery calls tasks by name, so the
# process's one Worker object is reached through here.
_runner: Optional[Callable[[str], None]] = None


def set_runner(runner: Optional[Callable[[str], None]]) -> None:
    global _runner
    _runner = runner


def celery_priority(priority: int) -> int:
    """Our priority (higher first) → Redis transport priority (0 is served first)."""
    return 0 if priority > 0 else (3 if priority == 0 else 6)


def make_celery(settings: Settings):
    from celery import Celery

    app = Celery("portrait", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.queue_name,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout,
                                  "priority_steps": list(range(10)), "queue_order_strategy": "priority"},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_track_started=False,
    )

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_job(self, job_id: str) -> None:
        if _runner is None:
            raise RuntimeError("this process is not a portrait worker (start it with `portrait worker`)")
        _runner(job_id)

    return app
