"""Command lines built from settings classes: every flag falls back to its environment variable.

`--help` shows each flag's default and its `[env: NAME]`. Precedence: flag, then environment, then default.
"""

from __future__ import annotations

import argparse
import logging
import textwrap
import threading
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, TypeVar

import pydantic
from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo

from common.errors import ConfigError
from common.lifecycle import EXIT_OK, stop_on_signals
from common.logs import setup_logging
from common.settings import StackSettings

S = TypeVar("S", bound=StackSettings)
log = logging.getLogger(__name__)


def env_name(settings_cls: type[StackSettings], name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[-1]).upper()
    if isinstance(alias, str):
        return alias.upper()
    return (settings_cls.model_config.get("env_prefix", "") + name).upper()


def doc_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A parser that says what its module's docstring says: the first paragraph as the description, the rest as
    the epilog, line breaks kept."""
    return argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_settings_arguments(
    parser: argparse.ArgumentParser, settings_cls: type[StackSettings], exclude: Iterable[str] = ()
) -> None:
    """One `--flag-name` per settings field, defaulting to 'not given' so that the environment can fill it. A field
    whose value is a model (the Kafka identity) is no flag: its description goes under the options."""
    skipped = set(exclude)
    environment_only = []
    for name, field in settings_cls.model_fields.items():
        if name in skipped:
            continue
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            environment_only.append(field.description or name)
            continue
        default = "unset" if field.default is None else field.default
        if hasattr(default, "get_secret_value"):
            default = "***"
        help_text = f"{field.description or name} (default: {default}) [env: {env_name(settings_cls, name, field)}]"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if field.annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(field.annotation, type) and issubclass(field.annotation, Enum):
            kwargs["metavar"] = "{" + ",".join(str(member.value) for member in field.annotation) + "}"
        else:
            kwargs["metavar"] = name.upper()
        parser.add_argument("--" + name.replace("_", "-"), **kwargs)
    if environment_only:
        note = "\n\n".join(textwrap.fill(text, 100) for text in environment_only)
        parser.epilog = f"{parser.epilog}\n\n{note}" if parser.epilog else note


def settings_from_args(settings_cls: type[S], args: argparse.Namespace, **overrides: Any) -> S:
    given = {k: v for k, v in vars(args).items() if k in settings_cls.model_fields}
    given.update(overrides)
    try:
        return settings_cls(**given)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"--{'.'.join(str(p) for p in err['loc']).replace('_', '-')}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


def describe(settings: StackSettings) -> str:
    """The effective settings on one line, secrets masked (SecretStr prints as ***)."""
    return ", ".join(f"{name}={getattr(settings, name)}" for name in type(settings).model_fields)


def run_service(
    parser: argparse.ArgumentParser,
    argv: list[str],
    settings_cls: type[S],
    finishing: str,
    run: Callable[[S, threading.Event], int | None],
) -> int:
    """A long-running command's main: parse, set up logging, settings (logged), then `run(settings, stop)` until
    SIGTERM or Ctrl-C sets `stop` (`finishing`: what it completes first, for the log). Returns run's exit code
    (0 when it returns None)."""
    args = parser.parse_args(argv)
    setup_logging()
    settings = settings_from_args(settings_cls, args)
    log.info("settings: %s", describe(settings))
    stop = threading.Event()
    with stop_on_signals(stop, finishing):
        code = run(settings, stop)
    return EXIT_OK if code is None else code
