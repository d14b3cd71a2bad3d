"""Methods: one folder per method (``dcx/methods/<name>/``), found by name, never imported directly by the tools.

A method's folder holds its config, cloud phase and device programs (``recipe.py``), the models only it uses,
and its simulation roles (``simulation.py``). Its ``__init__`` registers the recipe class with
``register_recipe`` (its default config is ``cls.Config()``), named variants with other configs
(``register_variant``) and its simulation with ``dcx.simulate.methods.register_simulation``; the registry finds
the folders through the ``dcx.methods`` entry points (``dcx.plugins``). Adding a method is one folder plus one
entry point. Every tool builds a recipe the same way,
``get_recipe(name, quick=False, **overrides)``; overrides are checked against
the config's fields, so ``--set key=value`` on the CLI means the same thing for
``train``, ``export`` and ``evaluate``.

A recipe is the single source of truth of a method:

- ``build_modules(seed)``: the method's modules, freshly initialised from the config;
- ``train(seed, progress)``: the cloud phase on real data -> ``TrainedModules``;
- ``device_programs(seed, modules=None, **options)``: what runs on the phone, built
  from trained modules (a checkpoint) or, without them, from ``build_modules``;
- ``evaluate(seed)``: the method end to end with its baselines;
- ``score(program_name, predict, seed)``: an exported inference program, run by
  ``predict``, scored on real held-out data.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
from torch import nn

from dcx.errors import DcxError
from dcx.programs import DeviceProgram

Predict = Callable[..., list[np.ndarray]]  # a runtime session's ``run``: numpy inputs -> numpy outputs


@dataclass(frozen=True)
class DataUsed:
    """One dataset slice a cloud phase trained or measured on (recorded in checkpoints)."""

    dataset: str  # e.g. "fashion-mnist", "movielens-100k"
    split: str  # e.g. "train", "test", "pool"
    samples: int
    role: str  # what it was used for, e.g. "cloud training", "held-out metrics"


@dataclass
class TrainedModules:
    """What a recipe's cloud phase produces: the trained modules, the held-out metrics and the data it used."""

    modules: dict[str, nn.Module]
    metrics: dict[str, float]
    data: list[DataUsed] = field(default_factory=list)


class Recipe(Protocol):
    name: str
    summary: str
    program_names: tuple[str, ...]
    cfg: Any  # the recipe's frozen config dataclass

    def build_modules(self, seed: int = 0) -> dict[str, nn.Module]: ...

    def train(self, seed: int = 0, progress: Callable[[str], None] = lambda s: None) -> TrainedModules: ...

    def device_programs(self, seed: int = 0, modules: dict[str, nn.Module] | None = None,
                        **options: Any) -> list[DeviceProgram]: ...

    def evaluate(self, seed: int = 0) -> dict[str, float]:
        """The method end to end on its real data, at the built-in (CI-sized) defaults."""

    def score(self, program_name: str, predict: Predict, seed: int = 0) -> dict[str, float]:
        """An inference program, run by ``predict``, scored on real held-out data."""


@dataclass(frozen=True)
class RecipeEntry:
    name: str
    cls: type
    config: Any  # the default config of this name
    quick: dict[str, Any]  # overrides for CI-sized runs (``--quick``)
    summary: str
    in_all: bool  # part of ``--recipe all`` (the methods' own recipes; variants are asked for by name)


_REGISTRY: dict[str, RecipeEntry] = {}


def register_recipe(cls: type) -> type:
    """Register a recipe class under ``cls.name`` with its default config ``cls.Config()``."""
    _REGISTRY[cls.name] = RecipeEntry(cls.name, cls, cls.Config(), dict(getattr(cls, "QUICK", {})), cls.summary, True)
    return cls


def register_variant(name: str, cls: type, config: Any, summary: str, quick: dict[str, Any] | None = None) -> None:
    """Another named config of an existing recipe class (e.g. a mobile-scale variant), asked for by name."""
    _REGISTRY[name] = RecipeEntry(name, cls, config, dict(quick if quick is not None else getattr(cls, "QUICK", {})),
                                  summary, False)


def _load() -> dict[str, str]:
    from dcx.plugins import load_plugins  # each method folder registers itself on import (dcx.methods entry points)

    return load_plugins("dcx.methods")


def recipe_names(only_all: bool = False) -> list[str]:
    """Every registered name, or (``only_all``) those that ``--recipe all`` means."""
    _load()
    return [n for n, e in _REGISTRY.items() if e.in_all or not only_all]


def _entry(name: str) -> RecipeEntry:
    missing = _load()
    if name in missing:
        raise DcxError(f"recipe {name!r} {missing[name]}: pip install 'dcx[all]' (a checkout: `make setup`)")
    if name not in _REGISTRY:
        raise DcxError(f"unknown recipe {name!r}: choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _check_keys(name: str, keys: Any, problem: str) -> None:
    """A one-line error when ``keys`` has one that is not a field of recipe ``name``'s config (``problem`` says
    what it is, with ``{key}``), listing the valid keys."""
    fields = sorted(f.name for f in dataclasses.fields(_entry(name).config))
    unknown = sorted(set(keys) - set(fields))
    if unknown:
        raise DcxError(problem.format(key=unknown[0]) + f"; valid keys: {', '.join(fields)}")


def config_of(name: str, *, quick: bool = False, **overrides: Any) -> Any:
    """The config of recipe ``name``: its defaults, the quick settings if asked, then ``overrides`` (checked)."""
    entry = _entry(name)
    _check_keys(name, overrides, f"--set {{key}}: recipe {name!r} has no such config key")
    hints = typing.get_type_hints(type(entry.config))
    checked = {k: _check_value(name, k, hints[k], v) for k, v in overrides.items()}
    return dataclasses.replace(entry.config, **{**(entry.quick if quick else {}), **checked})


def get_recipe(name: str, *, quick: bool = False, **overrides: Any) -> Recipe:
    """The recipe ``name`` with its config (see ``config_of``)."""
    entry = _entry(name)
    recipe = entry.cls(config_of(name, quick=quick, **overrides))
    recipe.name, recipe.summary = entry.name, entry.summary
    return recipe


def recipe_for_config(name: str, config: dict[str, Any]) -> Recipe:
    """The recipe ``name`` with a whole config as a checkpoint stored it (JSON values)."""
    _check_keys(name, config, f"config key {{key}} is not a field of recipe {name!r} (written by another dcx "
                              "version? re-run `dcx train`)")
    return get_recipe(name, **{k: _from_json(v) for k, v in config.items()})


def config_as_json(cfg: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def parse_overrides(name: str, pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` from ``--set`` -> typed overrides for recipe ``name`` (checked by ``config_of``)."""
    entry = _entry(name)
    hints = typing.get_type_hints(type(entry.config))
    valid = ", ".join(sorted(hints))
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DcxError(f"--set {pair!r}: expected key=value; valid keys for {name!r}: {valid}")
        if key not in hints:
            raise DcxError(f"--set {key}: recipe {name!r} has no such config key; valid keys: {valid}")
        out[key] = _parse_text(name, key, hints[key], text.strip())
    return out


# ---------------------------------------------------------------- typed values

def _from_json(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _parse_text(recipe: str, key: str, tp: Any, text: str) -> Any:
    if tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp)):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.lower()
        value = {"true": True, "false": False, "none": None, "null": None}.get(lowered, text)
    return _check_value(recipe, key, tp, value)


def _check_value(recipe: str, key: str, tp: Any, value: Any) -> Any:
    """``value`` as type ``tp`` (ints widen to floats, lists become tuples), or a one-line error."""
    ok, converted = _convert(tp, value)
    if not ok:
        raise DcxError(f"--set {key}={value!r}: recipe {recipe!r} expects {_type_name(tp)} for {key}")
    return converted


def _convert(tp: Any, value: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, v = _convert(arg, value)
            if ok:
                return True, v
        return False, None
    if tp is type(None):
        return value is None, None
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            return False, None
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            return False, None
        converted = [_convert(t, v) for t, v in zip(item_types, value)]
        return all(ok for ok, _ in converted), tuple(v for _, v in converted)
    return False, None


def resolve_recipes(name: str, **kwargs: Any) -> list[Recipe]:
    """``all`` (the three methods; variants such as ``iciia_mnv2`` are asked for by name) or one recipe name."""
    if name == "all":
        return [get_recipe(n, **kwargs) for n in recipe_names(only_all=True)]
    return [get_recipe(name, **kwargs)]


def get_program(full_name: str, seed: int = 0) -> DeviceProgram:
    """A program of a recipe at its default config, freshly initialised: ``get_program("dcccl.train")``."""
    recipe = get_recipe(full_name.split(".", 1)[0])
    for program in recipe.device_programs(seed):
        if program.name == full_name:
            return program
    raise DcxError(f"recipe {recipe.name!r} has no program {full_name!r}: choose one of {', '.join(recipe.program_names)}")

