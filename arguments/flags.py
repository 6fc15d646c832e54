"""Flags declared once, on the fields of a config dataclass; every script's parser is generated from it.

    @dataclass
    class PruneConfig:
        model_path: str = flag("", "trained model folder", short="-m", aliases=("--model",), required=True)
        threshold: Optional[float] = flag(None, "also remove Gaussians with contribution < T x max")
        sweep: bool = flag(False, "write sweep.json and sweep.png")

    parser = config_parser(PruneConfig, prog="prune.py", description="...")
    cfg, given = parse_config(parser, argv)      # given: names of the fields set on the command line

The rules (docs/architecture.md, "Flags"):

* Spelling: a field ``sweep_thresholds`` is the flag ``--sweep-thresholds`` (kebab-case, the canonical
  spelling shown first in ``--help``) and is also accepted as ``--sweep_thresholds`` (snake_case: Inria's
  spelling, so ``--source_path``, ``--model_path``, ``--white_background`` ... keep working). ``aliases``
  add older names (``--threads`` for ``--num-threads``), ``short`` a one-letter flag.
* Types come from the annotation: ``int``/``float``/``str``; ``Optional[X]`` (default None); ``Literal[...]``
  (the choices); ``bool`` is a switch ``--x`` / ``--no-x`` (``negative`` adds spellings that switch it off,
  e.g. ``--quiet`` for ``--no-progress``); ``list[X]`` takes ``nargs`` values or, with ``repeat=True``, one
  value per repetition of the flag. ``parse`` converts the text itself (e.g. ``"0,1e-4"`` -> a tuple).
* A field whose type is a dataclass (declared with :func:`nested`) contributes its own fields, under its
  group title (train.py: ModelParams, OptimizationParams, PipelineParams).
* Unset flags take the field's default; ``given`` tells which were set, for callers whose defaults come
  from elsewhere (a model's cfg_args, a preset).

This module imports nothing from the project but :mod:`utils.errors` (arguments/ sits on the ground floor).
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, fields
from typing import Any, Callable, Literal, Optional, Sequence, TypeVar, Union, get_args, get_origin

from utils.errors import ArgumentParser

T = TypeVar("T")
_SPEC = "gs_flag"       # field metadata key: a FlagSpec
_NESTED = "gs_nested"   # field metadata key: the group title of a nested config


@dataclass(frozen=True)
class FlagSpec:
    """How a config field appears on the command line (see the module docstring)."""

    help: str
    short: Optional[str] = None
    aliases: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    metavar: Optional[str | tuple[str, ...]] = None
    required: bool = False
    parse: Optional[Callable[[str], Any]] = None
    nargs: Optional[int | str] = None
    repeat: bool = False
    group: Optional[str] = None
    show_default: bool = True


def flag(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING, short: Optional[str] = None,
         aliases: Sequence[str] = (), negative: Sequence[str] = (), metavar: Optional[str | tuple[str, ...]] = None,
         required: bool = False, parse: Optional[Callable[[str], Any]] = None, nargs: Optional[int | str] = None,
         repeat: bool = False, group: Optional[str] = None, show_default: bool = True) -> Any:
    """A dataclass field with its command-line flag (module docstring: spelling, types)."""
    spec = FlagSpec(help, short, tuple(aliases), tuple(negative), metavar, required, parse, nargs, repeat, group,
                    show_default)
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={_SPEC: spec})
    return dataclasses.field(default=default, metadata={_SPEC: spec})


def nested(cls: type, title: Optional[str] = None) -> Any:
    """A field holding another config dataclass, whose flags are listed under ``title``."""
    return dataclasses.field(default_factory=cls, metadata={_NESTED: title or cls.__name__})


def option_strings(name: str, spec: FlagSpec) -> tuple[list[str], list[str]]:
    """(flags that set the field, flags that switch a bool off) for field ``name``."""
    kebab, snake = f"--{name.replace('_', '-')}", f"--{name}"
    on = ([spec.short] if spec.short else []) + [kebab] + ([snake] if snake != kebab else []) + list(spec.aliases)
    off = [f"--no-{name.replace('_', '-')}"] + ([f"--no-{name}"] if "_" in name else []) + list(spec.negative)
    return list(dict.fromkeys(on)), list(dict.fromkeys(off))


class _Switch(argparse.Action):
    """A bool field: its ``on`` spellings store True, the ``off`` ones (``--no-x``, ``negative``) False."""

    def __init__(self, option_strings: list[str], dest: str, off: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)
        self.off = frozenset(off)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Optional[str] = None) -> None:
        setattr(namespace, self.dest, option_string not in self.off)

    def format_usage(self) -> str:
        on = next(o for o in self.option_strings if o not in self.off)
        return f"{on} | {next(iter(o for o in self.option_strings if o in self.off))}"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every spelling of a flag on one line, its metavar once
    (``-s, --source-path, --source_path SOURCE_PATH``)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=110)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return ", ".join(action.option_strings) + " " + self._format_args(
            action, self._get_default_metavar_for_optional(action))


def _unwrap_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _help(spec: FlagSpec, f: dataclasses.Field) -> str:
    text = spec.help
    default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                         else None)
    if (not spec.show_default or spec.required or default in (None, "", [], ()) or "default" in text.lower()):
        return text
    return f"{text} (default: {_show(default).replace('%', '%%')})"


def _argparse_kwargs(tp: Any, spec: FlagSpec) -> dict[str, Any]:
    """type / choices / nargs / action for one non-bool field type."""
    tp = _unwrap_optional(tp)
    kwargs: dict[str, Any] = {}
    origin = get_origin(tp)
    if origin in (list, tuple) and spec.parse is None:
        inner = _unwrap_optional(get_args(tp)[0]) if get_args(tp) else str
        if get_origin(inner) is tuple:   # list[tuple[str, str]]: nargs values per repetition
            inner = get_args(inner)[0]
        tp, origin = inner, get_origin(inner)
        if spec.repeat:
            kwargs["action"] = "append"
        if spec.nargs is None and not spec.repeat:
            raise TypeError("a list field needs nargs= or repeat=True")
    if spec.nargs is not None:
        kwargs["nargs"] = spec.nargs
    if spec.parse is not None:
        kwargs["type"] = spec.parse
    elif origin is Literal:
        choices = get_args(tp)
        kwargs["choices"] = choices
        kwargs["type"] = type(choices[0])
    elif tp in (int, float, str):
        kwargs["type"] = tp
    else:
        raise TypeError(f"no command-line type for {tp!r}; give parse=")
    return kwargs


def leaf_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved type) of every flag field of ``cls``, nested configs flattened, in declaration order."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[dataclasses.Field, Any]] = []
    for f in fields(cls):
        if _NESTED in f.metadata:
            out.extend(leaf_fields(hints[f.name]))
        else:
            out.append((f, hints[f.name]))
    return out


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, title: Optional[str] = None,
                         groups: Optional[dict[Optional[str], Any]] = None) -> None:
    """Add one flag per field of ``cls`` (nested configs included) to ``parser``; ``dest`` = field name.

    Every added action carries ``config_field`` = "Class.field" (tests/test_cli.py checks that a script's
    parser holds nothing else)."""
    groups = {} if groups is None else groups
    hints = typing.get_type_hints(cls)

    def target(name: Optional[str]) -> Any:
        if name is None:
            return parser
        if name not in groups:
            groups[name] = parser.add_argument_group(name)
        return groups[name]

    for f in fields(cls):
        if _NESTED in f.metadata:
            add_config_arguments(parser, hints[f.name], f.metadata[_NESTED], groups)
            continue
        spec = f.metadata.get(_SPEC)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with arguments.flag(...) (every config field is a "
                            "flag)")
        where = target(spec.group or title)
        on, off = option_strings(f.name, spec)
        tp = _unwrap_optional(hints[f.name])
        common = dict(dest=f.name, default=argparse.SUPPRESS, help=_help(spec, f), required=spec.required)
        if tp is bool:
            action = where.add_argument(*on, *off, action=_Switch, off=off, **common)
        else:
            action = where.add_argument(*on, metavar=spec.metavar, **_argparse_kwargs(hints[f.name], spec), **common)
        action.config_field = f"{cls.__name__}.{f.name}"


def config_parser(cls: type, prog: Optional[str] = None, description: Optional[str] = None,
                  epilog: Optional[str] = None, usage: Optional[str] = None) -> ArgumentParser:
    """The script's whole parser, generated from its config ``cls`` (one-line errors, ``--debug``)."""
    parser = ArgumentParser(prog=prog, description=description, epilog=epilog, usage=usage,
                            formatter_class=HelpFormatter)
    add_config_arguments(parser, cls)
    parser.add_debug_flag()
    parser.config_class = cls  # type: ignore[attr-defined]
    return parser


def from_namespace(cls: type[T], ns: argparse.Namespace, given: Optional[set[str]] = None) -> T:
    """Build ``cls`` (nested configs too) from parsed flags; fields whose flag was not given keep their default.
    The names of the fields that were given are added to ``given``."""
    given = set() if given is None else given
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if _NESTED in f.metadata:
            values[f.name] = from_namespace(hints[f.name], ns, given)
        elif hasattr(ns, f.name):
            values[f.name] = getattr(ns, f.name)
            given.add(f.name)
    return cls(**values)


def parse_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> tuple[Any, set[str]]:
    """(config, names of the fields given on the command line) from ``argv`` (None: sys.argv)."""
    ns = parser.parse_args(None if argv is None else list(argv))
    given: set[str] = set()
    return from_namespace(parser.config_class, ns, given), given  # type: ignore[attr-defined]
