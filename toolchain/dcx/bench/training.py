"""Benchmark of the dcx training kernels: what the fast-training pass buys each training program.

Single-threaded, side by side in one run (rounds rotate through the candidates, so drift and other
processes hit them alike), medians and ratios:

- ``train_step``: one on-device SGD step of each training program in every runtime of ``dcx bench runtimes``
  (eager, stock ExecuTorch, LiteRT with and without XNNPACK, MNN, ``executorch-fast``), with the same sessions,
  parity check and timing (``dcx.bench.runtimes``; the targets are judged there alone); for ``executorch-fast``, which kernels ran (ETDump
  of the program), their share of the step, GFLOP/s and fraction of the single-core peak (a GEMM measured in
  the same run).
- ``kernel``: every dcx op at the shapes the programs call it with, against PyTorch eager doing the
  same computation (the op's reference, ``dcx.kernels.ops``).
- ``qemu_instructions``: guest instructions per step under qemu-aarch64 (the native runner and the
  NEON kernel build), fast and stock (``INSTRUCTIONS``), from runs of 1 and 1 + k steps.
- ``xnnpack``: where a training program has frozen layers (constant weights: the one part of a
  training graph XNNPACK can take), its step as exported (their forward in XNNPACK) against the same
  program with them on the dcx kernels too.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
from functools import partial
from pathlib import Path
from typing import Callable

import click
import torch
from torch import fx

from dcx.errors import DcxError
from dcx.bench.kernels import measure_gemm_peak, one_thread, time_side_by_side

PROGRAMS = ("coda.classifier.train", "coda.recommender.train", "dcccl.train")


# ---------------------------------------------------------------------------------------------- programs

def build_training_program(program, options=None) -> tuple[bytes, dict, object]:
    """What ``dcx export`` writes for a training program with ``options`` (default ``ExecuTorchOptions()``): the
    ``.pte``, the pass records by pass name and the graph before lowering."""
    from dcx.backends.executorch.options import ExecuTorchOptions
    from dcx.backends.executorch.exporter import EXPORTER
    from dcx.passes import PassContext

    options = options or ExecuTorchOptions()
    ctx = PassContext(program, options, "executorch")
    pte, graph = EXPORTER.build(program, options, ctx)
    return pte, {r.name: r.changes for r in ctx.records}, graph


def fast_program(program) -> tuple[bytes, dict, object]:
    """The fast ``.pte`` of a training program, the fast-training pass report and the rewritten graph."""
    pte, records, graph = build_training_program(program)
    return pte, records["fast_training"], graph


def stock_program(program) -> bytes:
    from dcx.backends.executorch.options import ExecuTorchOptions

    return build_training_program(program, ExecuTorchOptions(fast_training=False))[0]


def _conv_out(shape_x, shape_w, stride, padding, dilation) -> int:
    hw = [(shape_x[2 + i] + 2 * padding[i] - dilation[i] * (shape_w[2 + i] - 1) - 1) // stride[i] + 1 for i in range(2)]
    return shape_x[0] * shape_w[0] * hw[0] * hw[1]


# Argument positions of the convolution ops: x, weight, stride (padding and dilation follow), input_grad (None: forward)
_CONV_ARGS = {"conv2d": (0, 1, 3, None), "conv2d_backward": (1, 2, 4, 8),
              "conv2d_bn": (0, 1, 8, None), "conv2d_bn_backward": (3, 4, 10, 16),
              "conv2d_bn_batch_stats": (0, 1, 6, None), "conv2d_bn_batch_stats_backward": (3, 4, 9, 15)}


def node_flops(node: fx.Node) -> int:
    """Useful FLOPs (2 per multiply-add) of one dcx product node: linear and convolution, forward and backward."""
    name = node.target.__name__.split(".")[0]
    shape = lambda a: tuple(a.meta["val"].shape)  # noqa: E731
    if name in ("linear", "linear_backward"):
        x, w = (node.args[0], node.args[1]) if name == "linear" else (node.args[1], node.args[2])
        macs = shape(x)[0] * shape(x)[1] * shape(w)[0]
        return 2 * macs * (1 if name == "linear" else 1 + bool(node.args[4]))
    if name in _CONV_ARGS:
        xi, wi, si, gi = _CONV_ARGS[name]
        sx, sw = shape(node.args[xi]), shape(node.args[wi])
        macs = _conv_out(sx, sw, *node.args[si:si + 3]) * sw[1] * sw[2] * sw[3]
        return 2 * macs * (1 if gi is None else 1 + bool(node.args[gi]))
    return 0


def flops_by_op(ep) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in ep.graph.nodes:
        if n.op == "call_function" and str(n.target).startswith("dcx."):
            op = f"dcx::{n.target.__name__.split('.')[0]}.out"
            out[op] = out.get(op, 0) + node_flops(n)
    return out


def profile_kernels(pte: bytes, batch) -> list[dict]:
    """Operators of one run of the joint graph, from an ETDump (``dcx.targets.runner.top_operators``)."""
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    from dcx.targets.runner import top_operators

    module = _load_for_executorch_from_buffer(pte, enable_etdump=True, debug_buffer_size=0)
    for _ in range(20):
        module.forward(tuple(batch))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(path))
        return top_operators(path, limit=50)


# ---------------------------------------------------------------------------------------------- sessions

def _sessions(name: str, out: Path, peers: bool, progress: Callable[[str], None]):
    """(program, batch, fast pte, pass report, rewritten graph, sessions, reasons): ``training_sessions`` of
    ``dcx bench runtimes``, the fast session built from the pass here (with its report and graph)."""
    from dcx.bench.runtimes import training_sessions
    from dcx.backends.executorch.options import ExecuTorchOptions
    from dcx.methods.export import export_recipe
    from dcx.kernels.training import KERNEL_LIBRARY, load_executorch_kernels
    from dcx.manifest import Requirements, read_manifest
    from dcx.methods import get_program
    from dcx.backends.executorch.runtime import ExecuTorchSession

    program = get_program(name)
    batch = tuple(program.example_batches(1)[0])
    stock = {}
    for fmt in ("executorch", "tflite") if peers else ("executorch",):
        summary = export_recipe(program.recipe, fmt, out / fmt, force=True,
                                options={"executorch": ExecuTorchOptions(fast_training=False)}, progress=progress)  # the stock program; the fast one is built below
        if summary.failed:
            raise DcxError(f"bench: exporting {fmt} failed: {summary.failed[0].error}")
        stock[fmt] = (out / fmt, next(e for e in read_manifest(out / fmt).artifacts if e.program == name))
    pte, report, ep = fast_program(program)
    load_executorch_kernels()
    fast_entry = dataclasses.replace(stock["executorch"][1], file=f"{name}.fast.pte",
                                     requires=Requirements(sorted(f"{op}.out" for op in report["ops"]),
                                                           [KERNEL_LIBRARY]))
    sessions, reasons = training_sessions(program, batch, stock, ExecuTorchSession(pte, fast_entry), peers=peers)
    return program, batch, pte, report, ep, sessions, reasons


def qemu_instructions_per_step(program, pte: bytes, kernel_libs: list[Path], extra_steps: int) -> int:
    """Guest instructions of one training step on qemu-aarch64: runs of 1 and 1 + extra_steps steps, differenced."""
    from dcx.reference import build_reference
    from dcx.targets.runner import run_artifact

    from dcx.android.qemu import QemuTarget

    target = QemuTarget()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_reference(program, steps=1 + extra_steps).save(tmp / "ref.safetensors")
        (tmp / "m.pte").write_bytes(pte)
        counts = [run_artifact(target, tmp / "m.pte", tmp / "ref.safetensors", tmp / f"run{k}", kernel_libs=kernel_libs,
                               train_steps=k).instructions for k in (1, 1 + extra_steps)]
    if not all(counts):
        raise DcxError("qemu counted no instructions: build the plugin with `bash runtimes/native/build.sh`")
    return (counts[1] - counts[0]) // extra_steps


# ---------------------------------------------------------------------------------------------- kernel rows

def _random_args(node: fx.Node, g: torch.Generator) -> tuple:
    def value(a):
        if not isinstance(a, fx.Node):
            return a
        v = a.meta["val"]
        if v.dtype == torch.int64:  # class targets
            return torch.randint(0, 2, tuple(v.shape), generator=g)
        return torch.randn(tuple(v.shape), generator=g)
    return tuple(value(a) for a in node.args)


KERNEL_OPS = ("linear", "linear_backward", "conv2d", "conv2d_backward", "conv2d_bn", "conv2d_bn_backward",
              "cross_entropy_loss", "bce_with_logits_loss")


def kernel_rows(ep, program_name: str, rounds: int) -> list[dict]:
    """Each distinct dcx product/loss call of a program, dcx op against PyTorch eager doing the same."""
    from dcx.kernels.ops import OPS

    rows, seen = [], set()
    g = torch.Generator().manual_seed(0)
    for node in ep.graph.nodes:
        if node.op != "call_function" or not str(node.target).startswith("dcx."):
            continue
        name = node.target.__name__.split(".")[0]
        args = _random_args(node, g)
        key = (name, repr([tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in args]))
        if name not in KERNEL_OPS or key in seen:
            continue
        seen.add(key)
        op = getattr(torch.ops.dcx, name).default
        fns = {"dcx": partial(op, *args), "pytorch": partial(OPS[name].reference, *args)}
        samples = time_side_by_side(fns, rounds=rounds, target_s=0.002)
        med = {k: statistics.median(v) for k, v in samples.items()}
        flops = node_flops(node)
        rows.append({"measure": "kernel", "program": program_name, "op": f"dcx::{name}", "shape": key[1],
                     "dcx_s": med["dcx"], "pytorch_s": med["pytorch"], "speedup": med["pytorch"] / med["dcx"],
                     "gflops": flops / med["dcx"] / 1e9 if flops else None, "peak_fraction": None})
    return rows


# ---------------------------------------------------------------------------------------------- XNNPACK

def xnnpack_rows(program, pte: bytes, report: dict, rounds: int) -> list[dict]:
    """Where the fast pass left frozen layers for XNNPACK: one step of the program as exported against the same
    program with those layers on the dcx kernels too (``ExecuTorchOptions(frozen_xnnpack=False)``), side by side."""
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    from dcx.backends.executorch.options import ExecuTorchOptions

    if not report["left_for_xnnpack"]:
        return []
    dcx_pte = build_training_program(program, ExecuTorchOptions(frozen_xnnpack=False))[0]
    batch = tuple(program.example_batches(1)[0])
    modules = {"xnnpack": _load_for_executorch_from_buffer(pte), "dcx": _load_for_executorch_from_buffer(dcx_pte)}
    losses = {k: float(m.forward(batch)[0]) for k, m in modules.items()}
    if abs(losses["xnnpack"] - losses["dcx"]) > 1e-4 * max(1.0, abs(losses["dcx"])):
        raise DcxError(f"bench: {program.name} gives loss {losses['xnnpack']} with XNNPACK, {losses['dcx']} without")
    samples = time_side_by_side({k: partial(m.forward, batch) for k, m in modules.items()}, rounds=rounds)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return [{"measure": "xnnpack", "program": program.name, "xnnpack_s": med["xnnpack"], "dcx_s": med["dcx"],
             "xnnpack_faster": med["xnnpack"] < med["dcx"]}]


# ---------------------------------------------------------------------------------------------- the run

# What qemu-aarch64 counts the instructions of: the stock and the fast build of each training program,
# the fast one alone (a stock step that takes seconds natively takes far longer emulated), or neither.
INSTRUCTIONS = ("both", "fast", "none")


def run_training_bench(programs=PROGRAMS, rounds: int = 15, warmup: int = 3, instructions: str = "both",
                       kernel_shapes: bool = True, peers: bool = True,
                       progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Every row of the benchmark (see the module docstring); ``peers=False`` leaves out LiteRT and MNN."""
    from dcx.bench.runtimes import FAST, time_training
    from dcx.kernels.training import is_built

    if not is_built():
        raise DcxError("the training kernel benchmark needs the dcx training kernels: run `bash kernels/build.sh` first")
    rows: list[dict] = []
    with one_thread():
        peak = measure_gemm_peak()  # measured again at the end: the best of the two is the peak
        with tempfile.TemporaryDirectory() as tmp:
            for name in programs:
                program, batch, pte, report, ep, sessions, reasons = _sessions(name, Path(tmp) / name, peers, progress)
                step_rows = time_training(program, batch, sessions, reasons, rounds, warmup, progress)
                ops = profile_kernels(pte, batch)
                flops = flops_by_op(ep)
                total = sum(o["ms_per_run"] for o in ops)
                kernels = {o["operator"]: {"calls": o["calls_per_run"], "ms": o["ms_per_run"],
                                           "share": o["ms_per_run"] / total if total else None,
                                           "gflops": flops.get(o["operator"], 0) / (o["ms_per_run"] / 1e3) / 1e9
                                           if flops.get(o["operator"]) else None, "peak_fraction": None}
                           for o in ops}
                for row in step_rows:
                    if row["runtime"] == FAST:
                        row.update(kernels=kernels, pass_ops=report["ops"], left_alone=report["left_alone"],
                                   left_for_xnnpack=report["left_for_xnnpack"], stock_ops=report["stock_ops"])
                rows += step_rows
                if kernel_shapes:
                    rows += kernel_rows(ep, name, rounds=max(3, rounds // 3))
                    rows += xnnpack_rows(program, pte, report, rounds=max(3, rounds // 3))
                if instructions != "none":
                    rows.append(_instruction_row(program, pte, stock=instructions == "both"))
                    progress(f"{name:<24} qemu instructions/step: {rows[-1]}")
        peak = max(peak, measure_gemm_peak(), key=lambda p: p["gflops"])
    for r in rows:  # fractions of the best peak of the run
        for k in [r, *r.get("kernels", {}).values()]:
            if k.get("gflops"):
                k["peak_fraction"] = k["gflops"] / peak["gflops"]
    return [{"measure": "gemm_peak", **peak}, *rows]


def _instruction_row(program, pte: bytes, stock: bool) -> dict:
    """The fast program's count, and the stock program's where ``stock`` (else ``stock`` is None)."""
    from dcx.kernels import library_path

    extra = 2 if program.name.startswith("dcccl") else 8
    lib = library_path("training", "executorch", "aarch64")
    row = {"measure": "qemu_instructions", "program": program.name, "extra_steps": extra, "stock": None}
    try:
        row["fast"] = qemu_instructions_per_step(program, pte, [lib], extra)
        if stock:
            row["stock"] = qemu_instructions_per_step(program, stock_program(program), [], extra)
    except DcxError as e:
        row["error"] = str(e)
    return row


# ---------------------------------------------------------------------------------------------- Markdown

def _ms(s: float) -> str:
    return f"{s * 1e3:.3f}"


def _table(title: str, intro: list[str], columns: list[str], body: list[str]) -> list[str]:
    """A Markdown section with one table; nothing when there are no rows."""
    if not body:
        return []
    return [f"## {title}", "", *intro, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *(f"| {row} |" for row in body), ""]


def _rate(r: dict) -> str:
    """The GFLOP/s and % of peak cells of a row (dashes for ops that are not products)."""
    if not r["gflops"]:
        return "- | -"
    return f"{r['gflops']:.1f} | {100 * r['peak_fraction']:.0f}%"


def render_markdown(rows: list[dict], command: str = "dcx bench training --markdown benchmarks/training_kernels.md",
                    stamp_text: str | None = None) -> str:
    """The benchmark file; ``stamp_text`` is the stamp line (default: the stamp of a run measured now)."""
    from dcx.bench.runtimes import steps_markdown
    from dcx.stamp import current_stamp, stamp_line

    steps: dict[str, dict[str, dict]] = {}
    for r in rows:
        if r["measure"] == "train_step":
            steps.setdefault(r["program"], {})[r["runtime"]] = r
    peak = next((r for r in rows if r["measure"] == "gemm_peak"), None)
    lines = ["# Training kernels: fast on-device training in ExecuTorch", "",
             f"Written by `{command}`; do not edit by hand.", "", stamp_text or stamp_line(current_stamp(1)), "",
             "Times are medians of rounds in which every runtime of a program runs side by side (the order rotates",
             "each round); the ratios come from one run. `executorch` is the stock program (portable kernels);",
             "`executorch-fast` is the same joint graph after the fast-training pass",
             "(`dcx.backends.executorch.passes.fast_training`) on the dcx training kernels (`kernels/training/`). Every runtime",
             "does the whole step: forward, backward, SGD update.", ""]
    if peak:
        lines += [f"Single-core peak: **{peak['gflops']:.1f} GFLOP/s** ({peak['source']}; the best GEMM rate measured at the",
                  "start and at the end of the run).", ""]
    if steps:
        lines += ["## One training step", "", *steps_markdown(rows, judge_targets=False), ""]
    counts = [r for r in rows if r["measure"] == "qemu_instructions"]
    if counts:
        lines += ["## Instructions per step under qemu-aarch64", "",
                  "Guest instructions of one SGD step in the native runner (`runtimes/native`, aarch64 build: the",
                  "wheel's portable/optimized kernels, the NEON build of the dcx kernels), from runs of 1 and 1 + k",
                  "steps. Emulated time means nothing; instruction counts are repeatable. Stock is not counted",
                  "where the command says `--instructions fast`.", "",
                  "| program | stock ExecuTorch | executorch-fast | stock / fast |", "|---|---|---|---|"]
        for r in counts:
            if "error" in r:
                lines.append(f"| {r['program']} | - | - | not counted: {r['error']} |")
            elif r["stock"] is None:
                lines.append(f"| {r['program']} | not counted | {r['fast']:,} | - |")
            else:
                lines.append(f"| {r['program']} | {r['stock']:,} | {r['fast']:,} | {r['stock'] / r['fast']:.1f}x |")
        lines.append("")
    lines += ["## Which kernels ran", "",
              "Per program, the operators of one step of the fast program (ETDump of the joint graph in the",
              "ExecuTorch pybindings), with the share of operator time; for the products, useful GFLOP/s and the",
              "fraction of the single-core peak.", ""]
    for name, s in steps.items():
        fast = s.get("executorch-fast")
        if fast is None or "kernels" not in fast:
            continue
        left = ", ".join(f"`{r['node']}` ({r['op']}: {r['reason']})" for r in fast["left_alone"])
        op_ms = sum(k["ms"] for k in fast["kernels"].values())
        lines += [f"### {name}", "", f"Operators take {op_ms:.3f} ms per step in a profiled run of their own (ETDump); "
                  f"the timed step took {fast['median_step_s'] * 1e3:.3f} ms (see the notes).",
                  "", "Ops beside the dcx kernels (the frozen layers' among them run in XNNPACK, the rest on stock "
                  "kernels): " + ", ".join(f"{k} x{v}" for k, v in fast["stock_ops"].items())
                  + f". Frozen layers' nodes left for XNNPACK by the pass: {len(fast['left_for_xnnpack'])}. Left alone "
                  "for other reasons: "
                  + (left or "none") + ".", "",
                  "| operator | calls | ms per step | share | GFLOP/s | % of peak |", "|---|---|---|---|---|---|"]
        for op, k in sorted(fast["kernels"].items(), key=lambda kv: -kv[1]["ms"]):
            share = f"{100 * k['share']:.0f}%" if k["share"] is not None else "-"
            lines.append(f"| {op} | {k['calls']:.0f} | {k['ms']:.3f} | {share} | {_rate(k)} |")
        lines.append("")
    lines += _table("Kernels against PyTorch eager",
                    ["Each dcx op at the shapes the programs call it with (PyTorch ops, one dispatch each) against",
                     "PyTorch eager computing the same (the op's reference, `dcx.kernels.ops`)."],
                    ["program", "op", "argument shapes", "dcx µs", "PyTorch µs", "speed-up", "GFLOP/s", "% of peak"],
                    [f"{r['program']} | {r['op']} | `{r['shape']}` | {r['dcx_s'] * 1e6:.1f} | {r['pytorch_s'] * 1e6:.1f} | "
                     f"{r['speedup']:.2f}x | {_rate(r)}" for r in rows if r["measure"] == "kernel"])
    lines += _table("XNNPACK on the frozen part",
                    ["XNNPACK needs constant weights, so in a training graph it can take only frozen layers; the",
                     "export gives it their forward (`dcx.backends.executorch.passes.frozen_xnnpack`). The measurement behind",
                     "that choice: one step of the fast program as exported, and of the same program with the frozen",
                     "layers on the dcx kernels too (`ExecuTorchOptions(frozen_xnnpack=False)`), side by side:"],
                    ["program", "step with XNNPACK ms", "step on dcx kernels alone ms", "faster"],
                    [f"{r['program']} | {_ms(r['xnnpack_s'])} | {_ms(r['dcx_s'])} | "
                     + (f"XNNPACK, {r['dcx_s'] / r['xnnpack_s']:.2f}x" if r["xnnpack_faster"]
                        else f"dcx kernels alone, {r['xnnpack_s'] / r['dcx_s']:.2f}x: XNNPACK is slower here")
                     for r in rows if r["measure"] == "xnnpack"])
    lines += ["## Notes", "",
              "- The operator times come from a profiled run of their own, minutes from the timed rounds; this",
              "  machine's speed drifts between such runs, so their sum can come out above or below the timed step.",
              "  In a quiet run the step is the operators plus the runtime's call into the program, input",
              "  conversion and the SGD update.",
              "- Where a fast program's operators take a small part of its step (the CoDA programs), the step is",
              "  bounded by the host runtime: ExecuTorch's Python training extension runs four methods per",
              "  `forward_backward` (two index look-ups, the program, the parameter names) and clones every",
              "  gradient, for stock and fast programs alike. One call of the program with the SGD update applied",
              "  in place to its parameter outputs (what the native runner does) removes most of it.",
              "- Stock ExecuTorch cannot train every graph these kernels take: its portable kernels have no",
              "  `avg_pool2d_backward` (nor `_adaptive_avg_pool2d_backward`), and their",
              "  `max_pool2d_with_indices_backward` gives gradients that do not match PyTorch in training",
              "  programs; `dcx::max_pool2d_backward` and `dcx::avg_pool2d_backward` train them like eager PyTorch",
              "  (tests/test_training_kernels.py).", ""]
    return "\n".join(lines)


@click.command("training")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the rows as JSON.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write the Markdown (default: benchmarks/training_kernels.md of the repo).")
@click.option("--rounds", type=int, default=15, show_default=True, help="Timed rounds per program.")
@click.option("--instructions", type=click.Choice(INSTRUCTIONS), default="both", show_default=True,
              help="Which programs qemu-aarch64 counts instructions of: stock and fast, fast alone, or none.")
@click.option("--programs", default=",".join(PROGRAMS), show_default=True,
              help="Training programs, comma-separated (e.g. dcccl_mnv2.train for the mobile-scale one).")
def bench_training(json_path: str | None, markdown_path: str | None, rounds: int, instructions: str,
                   programs: str) -> None:
    """One training step per runtime with and without the dcx training kernels (single thread)."""
    from dcx.fileio import write_atomic
    from dcx.paths import REPO_ROOT
    from dcx.stamp import current_stamp, stamp_line

    chosen = [p.strip() for p in programs.split(",") if p.strip()]
    if not chosen or not all(p.endswith(".train") for p in chosen):
        raise click.BadParameter(f"{programs!r}: give training programs, e.g. {','.join(PROGRAMS)}",
                                 param_hint="--programs")
    stamp = current_stamp(1)  # what is measured: the checkout as the run starts
    rows = run_training_bench(programs=chosen, rounds=rounds, instructions=instructions,
                              progress=click.echo)
    md = Path(markdown_path) if markdown_path else REPO_ROOT / "benchmarks" / "training_kernels.md"
    command = " ".join(["dcx bench training", *(["--programs", programs] if chosen != list(PROGRAMS) else []),
                        *(["--instructions", instructions] if instructions != "both" else []),
                        *(["--rounds", str(rounds)] if rounds != 15 else []),
                        "--markdown", markdown_path or "benchmarks/training_kernels.md"])
    write_atomic(md, render_markdown(rows, command, stamp_line(stamp)))
    if json_path:
        write_atomic(Path(json_path), json.dumps({"stamp": stamp.as_dict(), "rows": rows}, indent=2) + "\n")
    click.echo(f"wrote {md}" + (f" and {json_path}" if json_path else ""))
