"""Structured JSON logs: one object per line with the job, tenant, identity, stage and worker ids
a record carries (`log.info("...", extra={"job": id, ...})`). Photo content is never logged: only
ids, counts and codes are passed as extras."""

from __future__ import annotations

import json
import logging
import sys
import time

FIELDS = ("job", "tenant", "identity", "batch", "stage", "worker", "kind", "state", "attempt", "photo",
          "accepted", "reasons", "code", "jobs", "delivery", "status", "seconds", "requeued", "ended", "deleted",
          "tenants")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        for f in FIELDS:
            v = getattr(record, f, None)
            if v is not None:
                out[f] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO", stream=None) -> None:
    """JSON lines on stderr for the `portrait.*` loggers (and Celery's)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("portrait", "celery"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level)
        lg.propagate = False
