"""A method's device programs through the export pipeline: trained from a checkpoint, or initialised from the
seed (what ``dcx export --recipe``/``--checkpoint`` runs)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Mapping

from dcx.errors import DcxError
from dcx.export.pipeline import ExportSummary, export_programs
from dcx.manifest import Provenance
from dcx.methods import config_as_json, resolve_recipes
from dcx.methods.checkpoint import load_checkpoint
from dcx.reference import TRAIN_STEPS
from dcx.progress import Progress, silent



def export_recipe(recipe_name: str | None, fmt: str, out: Path, *, checkpoint: Path | None = None, seed: int = 0,
                  overrides: dict[str, Any] | None = None, user: int | None = None, force: bool = False,
                  options: Mapping[str, Any] | None = None, reference_steps: int = TRAIN_STEPS,
                  progress: Progress = silent) -> ExportSummary:
    """A recipe's device programs through ``export_programs``: trained ones from ``checkpoint``, or initialised
    from ``seed`` (``recipe_name`` "all" exports every recipe, initialised)."""
    extra = {} if user is None else {"user": user}
    if checkpoint is not None:
        if recipe_name == "all":
            raise DcxError("--recipe all cannot be combined with --checkpoint: a checkpoint holds one recipe")
        ckpt, recipe, modules = load_checkpoint(Path(checkpoint), recipe_name, overrides)
        programs = recipe.device_programs(ckpt.seed, modules, **_options_for(recipe, extra, strict=True))
        provenance = Provenance("checkpoint", ckpt.seed, str(checkpoint), ckpt.tensors_sha256, ckpt.config)
        return export_programs(programs, out, fmt, force=force, options=options, provenance=provenance,
                               reference_seed=ckpt.seed, reference_steps=reference_steps, progress=progress)
    if recipe_name is None:
        raise DcxError("pass --recipe NAME (or all), or --checkpoint CKPT written by `dcx train`")
    if recipe_name == "all" and overrides:
        raise DcxError("--set needs one recipe: pass --recipe NAME")
    recipes = resolve_recipes(recipe_name, **(overrides or {})) if recipe_name != "all" else resolve_recipes("all")
    programs = []
    for recipe in recipes:
        programs += recipe.device_programs(seed, **_options_for(recipe, extra, strict=recipe_name != "all"))
    config = config_as_json(recipes[0].cfg) if len(recipes) == 1 else None
    provenance = Provenance("initialised", seed, recipe_config=config)
    return export_programs(programs, out, fmt, force=force, options=options, provenance=provenance,
                           reference_seed=seed, reference_steps=reference_steps, progress=progress)


def _options_for(recipe, options: dict[str, Any], strict: bool) -> dict[str, Any]:
    """The device-program options (e.g. CoDA's ``user``) that ``recipe`` takes; with ``strict``, others are errors."""
    accepted = inspect.signature(recipe.device_programs).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown and strict:
        raise DcxError(f"--{unknown[0]} does not apply to recipe {recipe.name!r}: drop it")
    return {k: v for k, v in options.items() if k in accepted}
