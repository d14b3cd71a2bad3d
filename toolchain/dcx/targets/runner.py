"""One artifact through the native runner on a target: what ``dcx profile`` calls.

Pushes the ``.pte``, its reference and the kernel libraries it needs, runs
``dcx_runner`` (runtimes/native) there, and pulls back its outputs and, when
asked, its ETDump; ``top_operators`` turns an ETDump into the operators that
took the time.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dcx.errors import DcxError
from dcx.manifest import ManifestEntry
from dcx.targets import RunRequest, Target, describe_exit

OUTPUTS = "outputs.safetensors"
ETDUMP = "run.etdp"


@dataclass
class NativeRun:
    target: str
    emulated: bool
    result: dict  # the runner's JSON object (runtimes/native/README.md)
    outputs: dict[str, np.ndarray]  # output/<name> (inference); param/final/<name> and loss (training)
    instructions: int | None  # guest instructions of the whole run, where the target counts them
    etdump: Path | None


def kernel_libraries(target: Target, entry: ManifestEntry) -> list[Path]:
    """The kernel libraries an artifact's manifest ``entry`` requires (``requires.kernel_libraries``), built
    for ``target``'s architecture."""
    from dcx.kernels.library import build_dir, build_hint

    libs = []
    for name in entry.requires.kernel_libraries:
        path = build_dir(target.arch) / f"lib{name}.so"  # arch: "host" or "aarch64", as dcx.kernels names them
        if not path.is_file():
            raise DcxError(f"{path} is missing ({entry.file} needs it on {target.name}): {build_hint(target.arch)}")
        libs.append(path)
    return libs


def run_artifact(target: Target, model: Path, reference: Path | None, local_dir: Path, *,
                 kernel_libs: Sequence[Path] = (), iterations: int | None = None, warmup: int | None = None,
                 train_steps: int | None = None, threads: int = 1, etdump: bool = False,
                 timeout_s: float = 600.0) -> NativeRun:
    """Run ``model`` on ``target`` with the inputs (or batches) of ``reference``; results land in ``local_dir``."""
    model, local_dir = Path(model), Path(local_dir)
    push = {model.name: model}
    args = ["--model", model.name, "--outputs", OUTPUTS, "--threads", str(threads)]
    if reference is not None:
        push[Path(reference).name] = Path(reference)
        args += ["--reference", Path(reference).name]
    for lib in kernel_libs:
        push[Path(lib).name] = Path(lib)
        args += ["--kernel-lib", f"./{Path(lib).name}"]
    for flag, value in (("--iterations", iterations), ("--warmup", warmup), ("--train-steps", train_steps)):
        if value is not None:
            args += [flag, str(value)]
    if etdump:
        args += ["--etdump", ETDUMP]
    local_dir.mkdir(parents=True, exist_ok=True)
    res = target.run(RunRequest(args, push, [OUTPUTS, ETDUMP], timeout_s=timeout_s), local_dir)
    if res.returncode != 0:
        lines = res.stderr.strip().splitlines()
        raise DcxError(f"dcx_runner on {target.name} {describe_exit(res.returncode)} running {model.name}"
                       + (f": {lines[-1][:300]}" if lines else ""))
    try:
        result = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise DcxError(f"{target.name}: dcx_runner printed no JSON result for {model.name}: rebuild it with "
                       "`bash runtimes/native/build.sh`") from None
    from safetensors.numpy import load_file

    outputs = load_file(str(res.pulled[OUTPUTS])) if OUTPUTS in res.pulled else {}
    return NativeRun(target.name, target.emulated, result, outputs, res.instructions,
                     res.pulled.get(ETDUMP))


def instructions_per_unit(target: Target, model: Path, reference: Path, kernel_libs: Sequence[Path], work: Path,
                          training: bool, counts: tuple[int, int] = (1, 6)) -> float:
    """Guest instructions of one inference (or one training step) on an instruction-counting target: the
    difference of two runs that differ only in how many they do, so loading and start-up cancel out."""
    totals = []
    for n in counts:
        run = run_artifact(target, model, reference, work, kernel_libs=kernel_libs,
                           **({"train_steps": n} if training else {"iterations": n, "warmup": 0}))
        if run.instructions is None:
            raise DcxError(f"{target.name} counts no instructions: use --target qemu")
        totals.append(run.instructions)
    return (totals[1] - totals[0]) / (counts[1] - counts[0])


_WRAPPERS = {"OPERATOR_CALL", "DELEGATE_CALL", "Method::execute"}
_NODE_NUMBER = re.compile(r" #\d+$")


def top_operators(etdump: Path, limit: int = 10) -> list[dict]:
    """The operators that took the most time per run, from an ETDump alone.

    ExecuTorch's Inspector needs no ETRecord for this: kernel calls carry their
    operator's name (``native_call_convolution.out``) and XNNPACK reports each
    delegated node (``Convolution (NHWC, F32) IGEMM #2``). Nodes of one type are
    summed; ``share`` is the fraction of the time spent inside operator and
    delegate calls.
    """
    from executorch.devtools import Inspector

    with warnings.catch_warnings():  # no debug buffer: the Inspector warns that tensor data is absent
        warnings.simplefilter("ignore")
        inspector = Inspector(etdump_path=str(etdump))
    totals: dict[tuple[str, bool], float] = defaultdict(float)
    calls: dict[tuple[str, bool], int] = defaultdict(int)
    runs, in_calls = 0, 0.0
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            raw = list(event.perf_data.raw) if event.perf_data else []
            if event.name in ("OPERATOR_CALL", "DELEGATE_CALL"):
                in_calls += sum(raw)
            if event.name in _WRAPPERS or not raw:
                continue
            runs = max(runs, len(raw))
            key = (_NODE_NUMBER.sub("", event.name.removeprefix("native_call_")), bool(event.is_delegated_op))
            totals[key] += sum(raw)
            calls[key] += len(raw)
    if runs == 0:
        raise DcxError(f"{etdump}: the ETDump holds no operator timings: run the runner with --etdump again")
    rows = [{"operator": op, "delegated": delegated, "ms_per_run": total / runs,
             "calls_per_run": calls[op, delegated] / runs, "share": total / in_calls if in_calls else None}
            for (op, delegated), total in totals.items()]
    return sorted(rows, key=lambda r: -r["ms_per_run"])[:limit]
