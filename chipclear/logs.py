"""structlog for the whole process: readable on a terminal, JSON lines in production.

The Temporal SDK logs through the standard library; those records are routed through the same
processors so an operator reads one format, with workflow and activity ids as fields.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

from chipclear.display import shown


def configure(level: str | None = None, json: bool | None = None) -> None:
    level = (level or os.environ.get("CHIPCLEAR_LOG_LEVEL") or "INFO").upper()
    if json is None:
        fmt = os.environ.get("CHIPCLEAR_LOG_FORMAT")
        json = fmt == "json" if fmt else not sys.stderr.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        without_core_record,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # filter_by_level first: a debug line below the level costs nothing on the hot path.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                # JSON escapes every control and non-ASCII character itself; the console renderer
                # writes text as it is, so names and reasons from users are escaped first.
                *([] if json else [escape_text]),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def without_core_record(
    logger: structlog.types.WrappedLogger, method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """A line forwarded from the SDK core carries the core's record object as an extra (`temporal_log`),
    which JSON can only show as `<builtins.BufferedLogEntry object at 0x…>`; its message and fields are
    in the line already."""
    event.pop("temporal_log", None)
    return event


def escape_text(
    logger: structlog.types.WrappedLogger, method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Every text of a log line with control, bidi and zero-width characters escaped (chipclear.display):
    a name holding ESC or U+202E must not act on the terminal an operator reads the log on. Other
    values are rendered by repr, which escapes them already."""
    return {
        shown(key) if isinstance(key, str) else key: shown(value, lines=key == "exception")
        if isinstance(value, str)
        else value
        for key, value in event.items()
    }


def get_logger(name: str = "chipclear") -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
