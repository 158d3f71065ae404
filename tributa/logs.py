"""Structured logs: one JSON object per line on stderr (or plain text for humans)."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "info", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.Formatter.converter = time.gmtime
    root = logging.getLogger("tributa")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # The job API's server: its errors (a handler's traceback among them) in the same format, not
    # uvicorn's own plain-text config (the API runs it with log_config=None).
    for name in UVICORN_LOGGERS:
        server = logging.getLogger(name)
        server.handlers[:] = [handler]
        server.setLevel(logging.WARNING)
        server.propagate = False


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
