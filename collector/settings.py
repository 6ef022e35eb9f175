"""Declaring and loading settings: each one declared once, read from flag, env, then file.

A service's config is a frozen dataclass whose fields are made with :func:`setting`.
:func:`load` fills it from, in order of precedence, the command line (``--data-dir``),
the environment (``STREAMTALLY_DATA_DIR``), a TOML file (``data_dir = "..."``, named by
``--config`` or ``STREAMTALLY_CONFIG``) and the declared default, then validates every
value; an invalid one raises :class:`ConfigError` naming the setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from collector.errors import ConfigError

ENV_PREFIX = "STREAMTALLY_"

T = TypeVar("T")
Check = Callable[[Any], str | None]


def setting(default: Any, help: str, *, check: Check | None = None, secret: bool = False) -> Any:
    """Declare one setting: its default, its help text, and an optional validity check.

    ``check`` returns an error message, or None when the value is fine. ``secret`` settings
    are never echoed back (``describe`` masks them).
    """
    meta = {"help": help, "check": check, "secret": secret}
    if isinstance(default, list | dict | set):
        frozen = tuple(default)
        return dataclasses.field(default=frozen, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def at_least(minimum: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value is None or value >= minimum else f"must be at least {minimum}"

    return check


def between(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        if value is None or low <= value <= high:
            return None
        return f"must be from {low} to {high}, not {value}"

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def cidrs(value: Any) -> str | None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not a CIDR network"
    return None


LISTEN_OFF = ("", "off")


def parse_listen(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port); None for ``""`` or ``off``.

    Raises ValueError for anything else.
    """
    if value.strip().lower() in LISTEN_OFF:
        return None
    host, sep, port_text = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets, like [::1]:9464")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError("not HOST:PORT")
    if not all(c.isalnum() or c in ".-:" for c in host):
        raise ValueError(f"{host!r} is not a host name or address")
    return host, int(port_text)


def listen_address(value: Any) -> str | None:
    """Check: ``HOST:PORT``, or empty / ``off`` for not listening at all."""
    try:
        parse_listen(value)
    except ValueError as exc:
        return f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9464) or off: {exc}"
    return None


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _parser_for(tp: Any) -> Callable[[str], Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        base = _parser_for(inner)
        return lambda raw: None if raw.strip() == "" else base(raw)
    if origin is tuple:
        base = _parser_for(args[0])
        return lambda raw: tuple(base(p.strip()) for p in raw.split(",") if p.strip())
    if tp is bool:
        return _parse_bool
    if tp is Path:
        return Path
    if tp in (int, float, str):
        return typing.cast(Callable[[str], Any], tp)
    raise TypeError(f"no parser for setting type {tp!r}")


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not a boolean")


def _coerce_file_value(tp: Any, value: Any) -> Any:
    """Values from TOML arrive typed already; lists become tuples, strings are parsed."""
    if isinstance(value, str):
        return _parser_for(tp)(value)
    if isinstance(value, list):
        return _parser_for(tp)(",".join(str(v) for v in value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _parser_for(tp)(str(value))
    return value


def fields_of(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def add_arguments(
    parser: argparse.ArgumentParser, *classes: type[Any], only: Sequence[str] | None = None
) -> None:
    """Add one ``--flag`` per declared setting of each config class to ``parser`` (``only``:
    just these settings, for a command that reads no others)."""
    for cls in classes:
        for f, _tp in fields_of(cls):
            if only is not None and f.name not in only:
                continue
            parser.add_argument(
                flag(f.name),
                dest=f.name,
                default=None,
                metavar=f.name.upper(),
                help=f"{f.metadata['help']} (env {env_name(f.name)}; default: "
                f"{'(generated)' if f.metadata['secret'] else _show(f.default)})",
            )


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)


def read_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    return data


def load(
    cls: type[T],
    cli: Mapping[str, Any] | argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    file_values: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from CLI values, then environment, then file, then defaults; validate."""
    if isinstance(cli, argparse.Namespace):
        cli = vars(cli)
    cli = cli or {}
    environ = os.environ if environ is None else environ
    file_values = file_values or {}
    values: dict[str, Any] = {}
    for f, tp in fields_of(cls):
        raw: Any = cli.get(f.name)
        source = flag(f.name)
        try:
            if raw is not None:
                value = _parser_for(tp)(raw) if isinstance(raw, str) else raw
            elif env_name(f.name) in environ:
                source = env_name(f.name)
                value = _parser_for(tp)(environ[env_name(f.name)])
            elif f.name in file_values:
                source = f"config file key {f.name}"
                value = _coerce_file_value(tp, file_values[f.name])
            else:
                value = f.default
        except (ValueError, TypeError) as exc:
            raise ConfigError(f.name, f"invalid value from {source}: {exc}") from None
        check: Check | None = f.metadata.get("check")
        if check is not None:
            problem = check(value)
            if problem:
                raise ConfigError(f.name, f"{problem} (from {source})")
        values[f.name] = value
    unknown = set(file_values) - _known_names()
    if unknown:
        raise ConfigError("config", f"unknown setting(s) in file: {', '.join(sorted(unknown))}")
    return cls(**values)


_REGISTERED: list[type[Any]] = []


def register(cls: type[T]) -> type[T]:
    """Class decorator: the config class takes part in unknown-key checks of config files."""
    _REGISTERED.append(cls)
    return cls


def _known_names() -> set[str]:
    names = {"config"}
    for cls in _REGISTERED:
        names.update(f.name for f in dataclasses.fields(cls))
    return names


def describe(obj: Any) -> dict[str, Any]:
    """The effective settings, secrets masked: safe to log."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = "***" if f.metadata.get("secret") and value else value
    return out


def settings_table(classes: Sequence[type[Any]]) -> list[tuple[str, str, str, str]]:
    """(flag, env, default, help) rows, for docs."""
    rows = []
    for cls in classes:
        for f, _tp in fields_of(cls):
            default = "(generated)" if f.metadata["secret"] else _show(f.default)
            rows.append((flag(f.name), env_name(f.name), default, f.metadata["help"]))
    return rows
