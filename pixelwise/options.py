"""Keyword options checked by name and type where they are declared: a model's, a data set's, a config's.

``check_options`` reads a builder's signature and type hints, refuses names it does not take (listing the
ones it does) and values of the wrong type (naming the option and the type), and converts what is plainly
meant (an int where a float is wanted, a YAML list where a tuple is). Its errors name the owner and the
option, so a typo in a recipe or a hand-edited ``config.json`` is one clear line, not a traceback from
deep inside a constructor.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Literal


class OptionError(ValueError):
    """An option a builder does not take, or a value of the wrong type; the message names both."""


def coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the type ``hint`` and converted where the meaning is plain (int -> float,
    list -> tuple); raises OptionError naming ``key``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return coerce(value, option, key)
            except OptionError:
                continue
        raise OptionError(f"{key} = {value!r} is not a valid {describe(hint)}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(choice) for choice in typing.get_args(hint))
            raise OptionError(f"{key} = {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            raise OptionError(f"{key} must be a list, got {value!r}")
        args = [arg for arg in typing.get_args(hint) if arg is not Ellipsis] or [Any]
        if origin is tuple and len(args) > 1:
            if len(value) != len(args):
                raise OptionError(f"{key} must have {len(args)} entries, got {value!r}")
            items = [coerce(item, arg, f"{key}[{i}]") for i, (item, arg) in enumerate(zip(value, args, strict=True))]
        else:
            items = [coerce(item, args[0], f"{key}[{index}]") for index, item in enumerate(value)]
        return tuple(items) if origin is tuple else type(value)(items)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise OptionError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if origin is not None or hint is Any or callable(hint) and hint.__module__ == "collections.abc":
        return value  # Callable and other hints a config cannot write: the builder checks them
    if hint is type(None):
        if value is not None:
            raise OptionError(f"{key} must be null")
        return None
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # PyYAML reads "1e-3" (no dot) as a string; accept it as the number it plainly is.
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    if isinstance(hint, type) and hint not in (int, float, str, bool) and isinstance(value, hint):
        return value  # os.PathLike and other classes
    raise OptionError(f"{key} = {value!r} is not a valid {describe(hint)}")


def describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def keyword_parameters(builder: Callable) -> tuple[list[str], dict[str, Any]]:
    """(names a builder takes by keyword, their type hints); a ``functools.partial`` omits what it fixes."""
    fixed = set(builder.keywords) if isinstance(builder, partial) else set()
    target = builder.func if isinstance(builder, partial) else builder
    function = target.__init__ if inspect.isclass(target) else target
    names = [
        name for name, parameter in inspect.signature(target).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY) and name not in fixed
    ]
    return names, typing.get_type_hints(function)


def check_options(what: str, builder: Callable, options: dict[str, Any], exclude: Iterable[str] = ()) -> dict:
    """``options`` checked by name and type against ``builder``'s keyword parameters, converted.

    ``what`` names the owner in messages (``"model 'unet'"``); ``exclude`` lists parameters the caller
    fills itself (a data set's root and split), which are not options.
    """
    names, hints = keyword_parameters(builder)
    valid = [name for name in names if name not in set(exclude)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise OptionError(f"unknown option(s) {unknown} for {what}; valid options: {sorted(valid)}")
    try:
        return {key: coerce(value, hints.get(key, Any), key) for key, value in options.items()}
    except OptionError as error:
        raise OptionError(f"{what}: {error}") from error


def check_fields(instance: Any) -> None:
    """Check (and convert in place) every field of a dataclass instance against its type hint; for
    ``__post_init__`` of the typed records (run card, CRF settings), so a bad value fails where it is made."""
    import dataclasses

    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value = coerce(getattr(instance, field.name), hints[field.name], field.name)
        object.__setattr__(instance, field.name, value)
