"""The command-line contract shared by `vocelio-proxy` and `vocelio-gateway`:
every user error is one line on stderr (`<prog> <command>: <what is wrong>`) and
a non-zero exit status, never a traceback. `guarded` is the one top-level
handler both `main` functions run their command through; `env_help` writes the
environment variables a settings model reads, for `--help`.

Exit statuses: 2 for input the user can fix before starting (a flag, a settings
file or environment value, a file to read), 1 when the command ran and failed
(a busy port, problems found), 130 on Ctrl-C, 70 for a bug (still one line: the
error's type says where to look)."""

from __future__ import annotations

import argparse
import errno
import sys
import typing
from collections.abc import Callable

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError as EnvParseError

from vocelio_proxy.settings import SettingsError, settings_problems


class OneLineParser(argparse.ArgumentParser):
    """argparse with a usage error on one line (`<prog>: <error> (see <prog> --help)`), exit 2;
    its subcommand parsers are of the same class."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"{self.prog}: {one_line(message)} (see {self.prog} --help)", file=sys.stderr, flush=True)
        raise SystemExit(2)


class UserError(Exception):
    """A mistake the user can fix, as the one line to print; `status` is the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def one_line(text: str) -> str:
    return " ".join(text.split())


def _os_error(exc: OSError) -> tuple[str, int]:
    if exc.errno == errno.EADDRINUSE:
        detail = one_line(str(exc)).split("] ", 1)[-1]
        return (f"cannot listen: {detail} (another process holds the port: stop it or choose another "
                "--port)"), 1
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen: {one_line(str(exc)).split('] ', 1)[-1]} (not an address of this host)", 1
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or one_line(str(exc))}", 2 if exc.filename else 1


def guarded(prog: str, body: Callable[[], int], report: Callable[[str, int], bool] | None = None) -> int:
    """Run one command; known user errors become one line on stderr and an exit status
    (`report`: offered the line first; True when it took it, as a worker's supervisor does)."""
    try:
        return body()
    except UserError as exc:
        message, status = str(exc), exc.status
    except SettingsError as exc:
        message, status = str(exc), 2
    except ValidationError as exc:
        message, status = f"invalid settings: {settings_problems(exc)}", 2
    except EnvParseError as exc:  # a list or mapping in the environment that is not JSON
        message, status = f"invalid settings: {exc} (lists and mappings are written as JSON)", 2
    except yaml.YAMLError as exc:
        message, status = f"invalid YAML: {getattr(exc, 'problem', None) or one_line(str(exc))}", 2
    except OSError as exc:
        message, status = _os_error(exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line; the type says where to look
        message, status = f"internal error: {type(exc).__name__}: {exc}", 70
    if report is not None and report(one_line(message), status):
        return status
    print(f"{prog}: {one_line(message)}", file=sys.stderr, flush=True)
    return status


def env_help(model: type[BaseModel], prefix: str, nested: bool) -> str:
    """`--help` text naming each environment variable of a settings model (top-level
    fields; nested ones by the `__` rule) with its default. `nested`: the model has a
    settings file and nested sections (the proxy's)."""
    lines = ["environment (overrides the settings file; flags override both):" if nested
             else "environment (flags override it):"]
    for name, field in model.model_fields.items():
        annotation = field.annotation
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if is_model:
            lines.append(f"  {prefix}{name.upper()}__<KEY>  ({name}.<key>, e.g. {prefix}{name.upper()}__"
                         f"{next(iter(annotation.model_fields)).upper()})")  # type: ignore[union-attr]
            continue
        default = field.get_default(call_default_factory=True)
        shown = "" if default is None or default == [] else f" (default {default})"
        lines.append(f"  {prefix}{name.upper()}{shown}")
    if nested:
        lines.append("  lists and mappings are JSON: VOCELIO_TRUSTED_HOSTS='[\"api.example.com\"]'")
    return "\n".join(lines)
