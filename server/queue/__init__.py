"""Job dispatch. The job row is the truth (see `lease`); a dispatcher only delivers job ids.

- embedded (default): workers poll the jobs table and claim rows themselves; nothing to deliver.
- celery (`PORTRAIT_BROKER_URL=redis://...`): each job id is published as a Celery task; the task
  claims the row (`lease.claim_job`), so a duplicate delivery is dropped while a live lease holds it.
"""

from __future__ import annotations

from typing import Iterable

from ..settings import Settings


class Dispatcher:
    """Delivers queued job ids to workers."""

    mode = "embedded"

    def publish(self, jobs: Iterable[tuple[str, int]]) -> None:
        """`jobs`: (job id, priority) of rows already committed as queued."""


class CeleryDispatcher(Dispatcher):
    mode = "celery"

    def __init__(self, settings: Settings):
        from .celery_app import make_celery

        self.app = make_celery(settings)

    def publish(self, jobs: Iterable[tuple[str, int]]) -> None:
        from .celery_app import TASK_NAME, celery_priority

        for job_id, priority in jobs:
            self.app.send_task(TASK_NAME, args=[job_id], priority=celery_priority(priority))


def make_dispatcher(settings: Settings) -> Dispatcher:
    return CeleryDispatcher(settings) if settings.fleet else Dispatcher()
