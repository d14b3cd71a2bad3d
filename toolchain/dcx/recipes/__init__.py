"""The recipe registry: methods are found by name, never imported directly by the tools.

A recipe is one module per method (timm-style: one file per family). It
registers a class with ``@register_recipe``; the class builds the method's
device programs with a uniform call, ``get_recipe(name).device_programs(seed)``.
"""

from __future__ import annotations

from typing import Callable, Protocol

from dcx.errors import DcxError
from dcx.programs import DeviceProgram


class Recipe(Protocol):
    name: str
    summary: str
    program_names: tuple[str, ...]

    def device_programs(self, seed: int = 0) -> list[DeviceProgram]: ...

    def evaluate(self, seed: int = 0) -> dict[str, float]:
        """The method end to end on its real data, at the built-in (CI-sized) defaults."""


_REGISTRY: dict[str, Callable[[], Recipe]] = {}


def register_recipe(cls: type) -> type:
    _REGISTRY[cls.name] = cls
    return cls


def recipe_names() -> list[str]:
    return list(_REGISTRY)


def get_recipe(name: str) -> Recipe:
    if name not in _REGISTRY:
        raise DcxError(f"unknown recipe {name!r}: choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


def resolve_recipes(name: str) -> list[Recipe]:
    """``all`` or one recipe name."""
    return [get_recipe(n) for n in recipe_names()] if name == "all" else [get_recipe(name)]


def get_program(full_name: str, seed: int = 0) -> DeviceProgram:
    recipe = get_recipe(full_name.split(".", 1)[0])
    for program in recipe.device_programs(seed):
        if program.name == full_name:
            return program
    raise DcxError(f"recipe {recipe.name!r} has no program {full_name!r}: choose one of {', '.join(recipe.program_names)}")


# Registration happens on import, as with timm's model files.
from dcx.recipes import coda, dcccl, iciia  # noqa: E402,F401
