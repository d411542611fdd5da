"""Job files: a TOML document naming a command and its options, for scheduled and batch runs.

```toml
command = "celantur"                 # or "clearml"
source = "s3://raw/celantur/"
output = "s3://stats/celantur/"
mask_scale = 50
incremental = true

[storage_options]                    # passed to s3fs as they are
endpoint_url = "${S3_ENDPOINT}"      # $NAME / ${NAME} are read from the environment
profile = "${AWS_PROFILE:-batch}"    # ${NAME:-default}: the default when unset or empty

[execution]
scheduler = "tcp://dask-scheduler:8786"
```

Keys are the fields of :class:`~pipeline.config.CelanturOptions` or
:class:`~pipeline.config.ClearmlOptions`; ``--set key=value`` (dotted for tables:
``execution.scheduler=sync``) overrides them. Strings expand environment variables as a shell
does: ``$NAME``, ``${NAME}``, ``${NAME:-default}`` (default when unset or empty),
``${NAME-default}`` (when unset); ``$$`` is a literal ``$``. An unknown key, a wrong type, an
unset variable without a default or any other ``$`` form is an
:class:`~pipeline.config.OptionError` naming the key (exit code 2).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pipeline.config import (
    CelanturOptions,
    ClearmlOptions,
    ExecutionOptions,
    OptionError,
    RunOptions,
    nest_storage_options,
    parse_key_value,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

COMMANDS: dict[str, type[RunOptions]] = {"celantur": CelanturOptions, "clearml": ClearmlOptions}
#: ``$$``, ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``$NAME``, or any other
#: ``$`` (the last alternative: refused, never taken literally).
_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_]\w*)|\$"
)


def _expand(value: Any, where: str) -> Any:
    """Environment variables in strings (also inside tables and lists), as a shell expands
    them (see the module's docstring)."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group("braced") or match.group("bare")
            if name is None:
                raise OptionError(
                    f"job key {where!r}: {value!r} holds a '$' that is not $NAME, ${{NAME}}, "
                    "${NAME:-default} or ${NAME-default} (write $$ for a literal $)"
                )
            current = os.environ.get(name)
            op = match.group("op")
            if (op == ":-" and not current) or (op == "-" and current is None):
                return str(match.group("default"))
            if current is None:
                raise OptionError(f"job key {where!r}: environment variable {name} is not set")
            return current

        return _VARIABLE.sub(lookup, value)
    if isinstance(value, Mapping):
        return {k: _expand(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _shown(name: str, value: Any) -> str:
    """``value`` as a message shows it: never a storage option's, which may be a credential."""
    if name.split(".")[0] == "storage_options":
        return f"a {type(value).__name__} (value not shown)"
    return repr(value)


def _check(name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against a field's type hint (lists become tuples where a tuple is
    expected); an OptionError naming ``name`` otherwise."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in get_args(hint):
            try:
                return _check(name, value, option)
            except OptionError:
                continue
        raise OptionError(f"job key {name!r} must be {_type_name(hint)}, got {_shown(name, value)}")
    if origin is Literal:
        if value in get_args(hint):
            return value
        choices = ", ".join(map(str, get_args(hint)))
        raise OptionError(f"job key {name!r} must be one of {choices}, got {_shown(name, value)}")
    if hint is type(None):
        if value is None:
            return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif origin is not None and issubclass(origin, Mapping):
        if isinstance(value, Mapping):
            return dict(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise OptionError(f"job key {name!r} must be {_type_name(hint)}, got {_shown(name, value)}")


def _build(cls: type[Any], data: Mapping[str, Any], prefix: str = "") -> Any:
    """A dataclass from a mapping, every key known and every value of its field's type."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in known:
            raise OptionError(f"unknown job key {name!r}; known keys: {', '.join(sorted(known))}")
        if hints[key] is ExecutionOptions:
            if not isinstance(value, Mapping):
                raise OptionError(f"job key {name!r} must be a table")
            values[key] = _build(ExecutionOptions, value, prefix=f"{name}.")
        else:
            values[key] = _check(name, value, hints[key])
    missing = [
        f"{prefix}{f.name}"
        for f in dataclasses.fields(cls)
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise OptionError(f"job file lacks the required key(s) {', '.join(map(repr, missing))}")
    return cls(**values)


def _apply_override(document: dict[str, Any], text: str) -> None:
    nested = nest_storage_options([parse_key_value(text, "--set")])
    for top, sub in nested.items():
        if isinstance(sub, dict) and isinstance(document.get(top), dict):
            document[top] = {**document[top], **sub}
        else:
            document[top] = sub


def load_job(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunOptions:
    """Read a job file into the options of its command.

    Parameters
    ----------
    path : a TOML job file.
    overrides : ``key=value`` strings (dotted keys for tables), applied after the file.

    Raises
    ------
    OptionError
        For an unreadable file, a missing or unknown ``command``, an unknown key, a wrong type,
        an unset ``${NAME}`` or an invalid value.
    """
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise OptionError(f"job file {path}: cannot be read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise OptionError(
            f"job file {path}: not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"job file {path}: not TOML: {exc}") from exc
    for text in overrides:
        _apply_override(document, text)
    command = document.pop("command", None)
    if command not in COMMANDS:
        raise OptionError(
            f"job file {path}: 'command' must be one of {', '.join(COMMANDS)}, got {command!r}"
        )
    expanded = {key: _expand(value, key) for key, value in document.items()}
    return typing.cast(RunOptions, _build(COMMANDS[command], expanded))
