"""What ``dcx train`` writes: a checkpoint folder that ``dcx export --checkpoint`` reads.

    CKPT/checkpoint.json     the typed ``Checkpoint``: recipe, config, seed, quick, metrics, data used,
                             and the index of the trained modules (tensor names, shapes, dtypes)
    CKPT/modules.safetensors every trained module's state dict, keys "<module>.<tensor>"

The architecture is not stored: the recipe rebuilds its modules from the
config (``build_modules``) and loads the tensors with ``strict=True``, as timm
does with a config name and a state dict. The folder is written under a
temporary name and renamed, so an interrupted ``dcx train`` leaves nothing
half-written; an existing checkpoint is replaced only with ``force``.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dcx.errors import DcxError
from dcx.fileio import replace_folder_atomically
from dcx.methods import DataUsed, Recipe, TrainedModules, config_as_json, get_recipe, recipe_for_config
from dcx.progress import Progress, silent

CHECKPOINT_SCHEMA = 1
INDEX = "checkpoint.json"
TENSORS = "modules.safetensors"


@dataclass(frozen=True)
class TensorInfo:
    shape: list[int]
    dtype: str


@dataclass
class Checkpoint:
    """The typed contents of ``checkpoint.json``."""

    schema: int
    recipe: str
    config: dict[str, Any]
    seed: int
    quick: bool
    metrics: dict[str, float]
    data: list[DataUsed]
    modules: dict[str, dict[str, TensorInfo]]  # module name -> tensor name -> info
    tensors_sha256: str
    dcx_version: str
    created: str
    path: Path | None = field(default=None, compare=False)

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("path")
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> "Checkpoint":
        where = path / INDEX
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise DcxError(f"{where} does not parse as JSON ({e}): re-run `dcx train`") from None
        if not isinstance(d, dict):
            raise DcxError(f"{where} is not a JSON object: re-run `dcx train`")
        if d.get("schema") != CHECKPOINT_SCHEMA:
            raise DcxError(f"{where}: field 'schema' is {d.get('schema')!r}, this dcx reads {CHECKPOINT_SCHEMA}: "
                           "re-run `dcx train`")
        try:
            return cls(
                schema=d["schema"], recipe=d["recipe"], config=dict(d["config"]), seed=int(d["seed"]),
                quick=bool(d["quick"]), metrics={k: float(v) for k, v in d["metrics"].items()},
                data=[DataUsed(**x) for x in d["data"]],
                modules={m: {t: TensorInfo(list(i["shape"]), i["dtype"]) for t, i in ts.items()}
                         for m, ts in d["modules"].items()},
                tensors_sha256=d["tensors_sha256"], dcx_version=d["dcx_version"], created=d["created"], path=path)
        except (KeyError, TypeError, ValueError) as e:
            raise DcxError(f"{where}: field {e} is missing or malformed: re-run `dcx train`") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_checkpoint(out: Path, recipe: Recipe, trained: TrainedModules, *, seed: int, quick: bool,
                     force: bool = False) -> Checkpoint:
    """Write ``trained`` as a checkpoint folder at ``out`` (atomically)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, dict[str, TensorInfo]] = {}
    for name, module in trained.modules.items():
        state = module.state_dict()
        index[name] = {k: TensorInfo(list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}
        tensors.update({f"{name}.{k}": v.detach().contiguous().clone() for k, v in state.items()})

    def fill(folder: Path) -> Checkpoint:
        save_file(tensors, str(folder / TENSORS), metadata={"dcx.recipe": recipe.name})
        ckpt = Checkpoint(
            schema=CHECKPOINT_SCHEMA, recipe=recipe.name, config=config_as_json(recipe.cfg), seed=seed, quick=quick,
            metrics=dict(trained.metrics), data=list(trained.data), modules=index,
            tensors_sha256=_sha256(folder / TENSORS), dcx_version=importlib.metadata.version("dcx"),
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        (folder / INDEX).write_text(ckpt.to_json())
        return ckpt

    ckpt = replace_folder_atomically(Path(out), fill, force=force, marker=INDEX, what="checkpoint",
                                     flag="--out")
    ckpt.path = Path(out)
    return ckpt


def read_checkpoint(path: Path) -> Checkpoint:
    """The typed index of the checkpoint folder at ``path`` (its files present and intact)."""
    path = Path(path)
    if not path.is_dir():
        raise DcxError(f"--checkpoint {path}: no such checkpoint folder; write one with `dcx train RECIPE --out {path}`")
    for name in (INDEX, TENSORS):
        if not (path / name).is_file():
            raise DcxError(f"checkpoint {path}: {name} is missing; re-run `dcx train` to write a whole checkpoint")
    ckpt = Checkpoint.from_json((path / INDEX).read_text(), path)
    if _sha256(path / TENSORS) != ckpt.tensors_sha256:
        raise DcxError(f"checkpoint {path}: {TENSORS} does not match the sha256 in {INDEX} (altered or truncated); "
                       "re-run `dcx train`")
    return ckpt


def load_checkpoint(path: Path, recipe_name: str | None = None,
                    overrides: dict[str, Any] | None = None) -> tuple[Checkpoint, Recipe, dict[str, nn.Module]]:
    """The checkpoint, its recipe (with the checkpoint's config) and its trained modules.

    ``recipe_name`` and ``overrides``, when given, must agree with the checkpoint: a checkpoint of another
    recipe or config is a one-line error naming both.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = read_checkpoint(path)
    if recipe_name is not None and recipe_name != ckpt.recipe:
        raise DcxError(f"checkpoint {path} was trained for recipe {ckpt.recipe!r}, not {recipe_name!r}: "
                       f"pass --recipe {ckpt.recipe} or a checkpoint of {recipe_name!r}")
    recipe = recipe_for_config(ckpt.recipe, ckpt.config)
    for key, value in (overrides or {}).items():
        stored = getattr(recipe.cfg, key)
        if stored != value:
            raise DcxError(f"checkpoint {path} has {ckpt.recipe} config {key}={stored!r}, but --set asks for "
                           f"{key}={value!r}: drop the --set or train a checkpoint with it")
    modules = recipe.build_modules(ckpt.seed)
    if set(modules) != set(ckpt.modules):
        raise DcxError(f"checkpoint {path} holds modules {sorted(ckpt.modules)}, recipe {ckpt.recipe!r} builds "
                       f"{sorted(modules)}: re-run `dcx train`")
    try:
        tensors = load_file(str(Path(path) / TENSORS))
    except (SafetensorError, OSError) as e:
        raise DcxError(f"checkpoint {path}: {TENSORS} cannot be read ({e}): re-run `dcx train`") from None
    for name, module in modules.items():
        prefix = f"{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise DcxError(f"checkpoint {path}: module {name!r} does not fit recipe {ckpt.recipe!r} with its stored "
                           f"config ({str(e).splitlines()[0]}): re-run `dcx train`") from None
        module.eval()
    return ckpt, recipe, modules


# ---------------------------------------------------------------- the cloud phase of a simulation

def train_checkpoint(m, devices: int, quick: bool, seed: int, folder: Path, progress: Progress = silent) -> Path:
    """A simulated method's cloud phase for ``devices`` devices (``m``: its ``dcx.simulate.methods.Method``), written
    as a checkpoint at ``folder`` (as ``dcx train`` does)."""
    recipe = get_recipe(m.name, quick=quick, **m.overrides(devices))
    m.check_devices(recipe.cfg, devices)
    progress(f"[{m.name}] cloud phase{' (quick)' if quick else ''}, seed {seed}")
    trained = recipe.train(seed, progress=lambda s: progress(f"  {s}"))
    write_checkpoint(folder, recipe, trained, seed=seed, quick=quick)
    return folder


def simulation_cloud_phase(m, devices: int, quick: bool, seed: int, checkpoint: Path | None, scratch: Path,
                           progress: Progress) -> tuple[Any, dict, str | None]:
    """A simulated method's recipe, its trained modules and where they came from, always read from a checkpoint:
    ``--checkpoint``, or one trained now (``dcx.simulate.methods.Method.cloud_phase``)."""
    source = None if checkpoint is None else str(checkpoint)
    if checkpoint is None:
        checkpoint = train_checkpoint(m, devices, quick, seed, scratch / "checkpoint", progress)
    ckpt, recipe, modules = load_checkpoint(Path(checkpoint), m.name)
    if ckpt.seed != seed:
        raise DcxError(f"--seed {seed}: checkpoint {checkpoint} was trained with seed {ckpt.seed} (the devices' data "
                       f"derive from it); pass --seed {ckpt.seed}")
    for key, value in m.overrides(devices).items():
        if getattr(recipe.cfg, key) != value:
            raise DcxError(f"--devices {devices}: checkpoint {checkpoint} was trained with {key}="
                           f"{getattr(recipe.cfg, key)}; pass --devices {getattr(recipe.cfg, key)} or train one with "
                           f"`dcx train {m.name} --set {key}={value}`")
    m.check_devices(recipe.cfg, devices)
    return recipe, modules, source
