"""``dcx coverage``: which architectures each format exports, runs and trains as PyTorch does.

For every registered architecture (``dcx.models.registry``) two programs are exported to every format and
verified: a training program (every layer trainable, the module in ``train()`` mode so batch norm normalises
with batch statistics, AdamW) and an inference program (``eval()``, batch 1). Each cell of the table is
``verified`` (every verify row passes), what was verified when a check cannot run on this host (Core ML executes
only on macOS), ``n/a`` (ONNX exports inference only), or the one-line reason it is not: the export failure
(op, format), the failing verify check and its error, or any exception, caught per cell. A second report per
architecture: with only its last ``FINETUNE_BLOCKS`` blocks trainable, how many backward ops of the ExecuTorch
joint graph compute a gradient below them (``dcx.finetune``; it should be none).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import dcx
from dcx.errors import DcxError
from dcx.finetune import gradient_reach, train_last_blocks
from dcx.models.registry import Architecture
from dcx.models.tasks import TaskLoss
from dcx.optim import AdamW
from dcx.passes.graph_capture import capture_joint

FORMATS = ("executorch", "tflite", "coreml", "onnx")
KINDS = ("train", "infer")
OPTIMIZER = AdamW(lr=1e-3, weight_decay=0.01)
REFERENCE_STEPS = {False: 5, True: 2}  # by quick: AdamW steps each training artifact is verified over
FINETUNE_BLOCKS = 2
VERIFIED = "verified"
ONNX_TRAINING = "n/a (ONNX exports inference only)"


@dataclass
class Cell:
    format: str
    kind: str
    status: str  # "verified", "checks not run" (no failure, some checks cannot run here), "n/a" or "failed"
    label: str  # what the table shows: "verified", or a few words (the text is then its footnote)
    text: str  # the one-line reason: the export failure, the failing check and its error, what was not run


@dataclass
class Result:
    arch: str
    summary: str
    size: str
    cells: list[Cell] = field(default_factory=list)
    finetune: str = ""
    seconds: float = 0.0


def one_line(e: BaseException) -> str:
    """An exception as one line: a dcx error's own words, anything else with its type."""
    text = str(e) if isinstance(e, DcxError) else f"{type(e).__name__}: {e}"
    return " ".join(text.split()) or type(e).__name__


def create(arch: Architecture, quick: bool) -> nn.Module:
    """``arch`` built from a fixed seed: the random initialisations, and so the table, are the same every run."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return arch.create(quick)


def training_mode(model: nn.Module) -> nn.Module:
    """``train()`` for every layer but dropout, whose random masks no device runtime can reproduce."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return model


def training_program(arch: Architecture, quick: bool, model: nn.Module, name: str):
    """``model`` trained on ``arch``'s task with AdamW, on random batches at the task's batch size."""
    size = arch.size(quick)

    def batches(steps: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
        generator = torch.Generator().manual_seed(seed + 1)
        return [size.task.sample(size.batch, generator) for _ in range(steps)]

    example = size.task.sample(size.batch, torch.Generator().manual_seed(0))
    return dcx.training_program(name, TaskLoss(model, size.task), example, (*size.task.model_inputs, "label"),
                                optimizer=OPTIMIZER, batches=batches, summary=arch.summary)


def make_program(arch: Architecture, quick: bool, kind: str):
    """``arch``'s training program (every layer trainable, ``train()`` mode) or inference program (batch 1)."""
    if kind == "train":
        return training_program(arch, quick, training_mode(create(arch, quick)), f"{arch.name}.train")
    task = arch.size(quick).task
    inputs = task.sample(1, torch.Generator().manual_seed(0))[:-1]
    return dcx.inference_program(f"{arch.name}.infer", create(arch, quick).eval(), inputs, task.model_inputs,
                                 task.outputs, summary=arch.summary)


def _cell(fmt: str, kind: str, summary, rows) -> Cell:
    """``fmt``'s cell from the export summary and the verify rows: the first of export failed, declined, a check
    failed, or checks that could not run here; else verified."""
    failure = next((f for f in summary.failed if f.format == fmt), None)
    if failure is not None:
        label = f"export failed ({failure.op})" if failure.op else "export failed"
        return Cell(fmt, kind, "failed", label, " ".join(failure.error.split()))
    skipped = next((s for s in summary.skipped if s["format"] == fmt), None)
    if skipped is not None:
        return Cell(fmt, kind, "failed", "not exported", skipped["reason"])
    mine = [r for r in rows if r.format == fmt]
    bad = next((r for r in mine if r.verdict == "FAIL"), None)
    if bad is not None:
        error = f" (error {bad.error:.1e}, tol {bad.tolerance:.0e})" if bad.error is not None and bad.tolerance else ""
        return Cell(fmt, kind, "failed", f"FAIL {bad.check}", f"{bad.check}{error}: {' '.join(bad.detail.split())}")
    if not mine:
        return Cell(fmt, kind, "failed", "no verify rows", "verify gave no rows for this artifact")
    not_run = [r for r in mine if r.verdict == "not run"]
    if not not_run:
        return Cell(fmt, kind, VERIFIED, VERIFIED, VERIFIED)
    trained = any(r.check == "coreml_training_gap" for r in mine)
    label = f"verified except {', '.join(sorted({r.check for r in not_run}))}" + \
        (" (trained in dcx's Core ML interpreter)" if trained else "")
    why = "; ".join(sorted({f"{r.check}: {r.detail.split(';')[0]}" for r in not_run}))
    return Cell(fmt, kind, "checks not run", label,
                f"{len(mine) - len(not_run)} of {len(mine)} checks pass; not run: {why}")


def cover(arch: Architecture, quick: bool, out: Path, progress: Callable[[str], None]) -> Result:
    """Export and verify ``arch``'s two programs in every format into ``out/<kind>``; never raises."""
    size = arch.size(quick)
    result = Result(arch.name, arch.summary, f"{size.task}, batch {size.batch}")
    start = time.perf_counter()
    for kind in KINDS:
        formats = [f for f in FORMATS if not (kind == "train" and f == "onnx")]
        try:
            summary = dcx.export_programs([make_program(arch, quick, kind)], out / kind, formats, force=True,
                                          reference_steps=REFERENCE_STEPS[quick], progress=progress)
            rows = dcx.verify(out / kind)
            cells = [_cell(f, kind, summary, rows) for f in formats]
        except Exception as e:  # the program cannot be made or exported at all: every format says why
            cells = [Cell(f, kind, "failed", f"error ({type(e).__name__})", one_line(e)) for f in formats]
        result.cells += cells
        if kind == "train":
            result.cells.append(Cell("onnx", kind, "n/a", ONNX_TRAINING, ONNX_TRAINING))
    result.finetune = finetune_line(arch, quick)
    result.seconds = time.perf_counter() - start
    return result


def finetune_line(arch: Architecture, quick: bool, k: int = FINETUNE_BLOCKS) -> str:
    """With only the last ``k`` blocks trainable, the backward ops of the ExecuTorch joint graph below them."""
    try:
        model = training_mode(create(arch, quick))
        lowest = train_last_blocks(model, k)
        reach = gradient_reach(capture_joint(training_program(arch, quick, model, f"{arch.name}.finetune")))
    except Exception as e:
        return f"last {k} blocks trainable: not checked: {one_line(e)}"
    blocks = len(model.blocks())
    line = (f"last {k} of {blocks} blocks trainable: {len(reach.below)} gradient ops below block {lowest} "
            f"({reach.backward_ops} backward ops)")
    return line + (f": {'; '.join(reach.below[:3])}" if reach.below else "")


def run_coverage(archs: list[Architecture], quick: bool, out: Path, progress: Callable[[str], None],
                 done: Callable[[list[Result]], None]) -> list[Result]:
    """Every architecture in turn; ``done`` gets the results so far after each (files rewritten as it goes)."""
    results: list[Result] = []
    for arch in archs:
        progress(f"[{arch.name}] {arch.summary}")
        results.append(cover(arch, quick, out / arch.name, progress))
        progress(f"[{arch.name}] {results[-1].seconds:.0f} s; {results[-1].finetune}")
        done(results)
    return results


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(results: list[Result], command: str, stamp: str, quick: bool) -> str:
    """The table, each reason as a numbered note under it (one per distinct reason), and the fine-tuning lines."""
    columns = [(f, k) for f in FORMATS for k in KINDS]
    notes: dict[str, int] = {}

    def shown(c: Cell | None) -> str:
        if c is None:
            return "-"
        if c.text == c.label:
            return c.label
        return f"{c.label} [{notes.setdefault(c.text, len(notes) + 1)}]"

    lines = ["# Architecture coverage: every format, training and inference", "",
             f"Written by `{command}`; do not edit by hand.", stamp, "",
             f"Training programs: every layer trainable, the module in `train()` mode (batch norm on batch "
             f"statistics; dropout off), AdamW (lr {OPTIMIZER.lr:g}, weight decay {OPTIMIZER.weight_decay:g}), "
             f"verified over {REFERENCE_STEPS[quick]} steps; inference programs: `eval()`, batch 1. "
             f"{'`--quick` sizes: small inputs and widths, random weights.' if quick else 'Real sizes.'} A cell is "
             f"`{VERIFIED}` when every `dcx verify` row of the artifact passes; otherwise what ran, or why not.", "",
             "| architecture | " + " | ".join(f"{f} {k}" for f, k in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for r in results:
        cells = {(c.format, c.kind): c for c in r.cells}
        lines.append(f"| {r.arch} | " + " | ".join(_escape(shown(cells.get(c))) for c in columns) + " |")
    lines += [""] + [f"{n}. {text}" for text, n in notes.items()]
    lines += ["", f"Fine-tuning the last {FINETUNE_BLOCKS} blocks (the others frozen, in `eval()` mode): backward ops "
                  "of the ExecuTorch joint graph that compute a gradient below the lowest trainable block "
                  "(`dcx.finetune.gradient_reach`).", ""]
    lines += [f"- **{r.arch}** ({r.size}; {r.seconds:.0f} s): {r.finetune}" for r in results]
    verified = sum(c.status == VERIFIED for r in results for c in r.cells)
    total = sum(c.status != "n/a" for r in results for c in r.cells)
    lines += ["", f"{verified} of {total} cells verified."]
    return "\n".join(lines) + "\n"


def as_json(results: list[Result], stamp: dict, quick: bool) -> dict:
    return {"stamp": stamp, "quick": quick, "reference_steps": REFERENCE_STEPS[quick],
            "results": [asdict(r) for r in results]}
