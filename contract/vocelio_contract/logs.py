"""Process logging for the proxy and operator: one JSON object per line
(`log_format: json`, production) or one human-readable line (`text`,
development): `12:00:01.234 INFO  vocelio.proxy: listening host=0.0.0.0 port=8080`.
Set up once by the CLI entry points. Both formats escape control characters
in every value, so no logged text can split or forge a line."""

from __future__ import annotations

import json
import logging
import sys
import time
from json.encoder import encode_basestring_ascii
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def text_value(value: object) -> str:
    """A value for a text line: plain when it is a simple word, else a JSON string
    (quoted, control and non-ASCII characters escaped)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and all(c.isalnum() or c in "._:/-@+" for c in text) and text.isascii():
        return text
    return encode_basestring_ascii(text)


class TextFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVEL logger: message key=value ...` (local time), for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        message = record.getMessage()
        line = f"{clock}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
        line += encode_basestring_ascii(message)[1:-1]  # escaped, without the quotes
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += "".join(f" {k}={text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += " exc=" + encode_basestring_ascii(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "INFO", log_format: str = "json") -> None:
    """Route every logger to stdout in `log_format` (json or text) at `level` (any case)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(TextFormatter() if log_format == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def now_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def normal_log_level(value: object) -> object:
    """A log level in any letter case (and `warn`) as its upper-case name; anything else
    unchanged, for the field's own check to refuse."""
    if isinstance(value, str):
        level = value.strip().upper()
        return "WARNING" if level == "WARN" else level
    return value


def normal_log_format(value: object) -> object:
    """A log format in any letter case; anything else unchanged, for the field's own check."""
    return value.strip().lower() if isinstance(value, str) else value


#: The settings field types both commands use: levels and formats in any letter case.
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(normal_log_level)]
LogFormat = Annotated[Literal["json", "text"], BeforeValidator(normal_log_format)]
