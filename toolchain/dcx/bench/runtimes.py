"""``dcx bench runtimes``: one on-device training step per runtime, side by side in one run, and the targets.

Runtimes (``RUNTIMES``): PyTorch eager (the reference), stock ExecuTorch (portable kernels), LiteRT as phones
ship it (with its default XNNPACK delegate) and with its builtin kernels alone, MNN's own trainer, and dcx
(``executorch-fast``: the same ExecuTorch program after the fast-training pass, on the dcx training kernels).

A peer must compute what the program computes: every runtime starts from the program's weights and steps on the
same batch; the losses and the trained weights of the first ``PARITY_STEPS`` steps are compared with eager's, and
a peer that differs is left out with the measured difference as its reason (``check_parity``).

Single-threaded (2-core machines jitter badly otherwise); the runtimes are interleaved round by round
(``time_side_by_side``) so drift hits them alike. Targets are judged conservatively (``judge``): dcx's median
step against each peer's fastest round, so noise can only hurt dcx's claims. ``dcx bench training``
(``dcx.bench.training``) times the same sessions and judges with the same function.

Each judged target is one machine-readable line, ``verdict: PROGRAM TARGET: met|not met|n/a`` (``verdict_lines``);
``dcx readme --check`` fails when two generated files give one target different verdicts.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from dcx.backends import formats, get_runtime
from dcx.errors import DcxError
from dcx.backends.executorch.options import ExecuTorchOptions
from dcx.methods.export import export_recipe
from dcx.bench.kernels import one_thread, time_side_by_side
from dcx.manifest import ManifestEntry, read_manifest
from dcx.programs import DeviceProgram
from dcx.methods import get_program
from dcx.training import sgd_step

FAST = "executorch-fast"
RUNTIMES = {  # label -> what runs, in the order of the tables
    "eager": "PyTorch eager, the reference",
    "executorch": "stock ExecuTorch (portable kernels)",
    "tflite": "LiteRT, builtin kernels without XNNPACK",
    "tflite-xnnpack": "LiteRT with its default XNNPACK delegate, as phones run it",
    "mnn": "MNN's trainer (converter, MNN.nn, MNN.optim.SGD)",
    FAST: "dcx: ExecuTorch on the dcx training kernels, frozen layers in XNNPACK",
}
PEERS = ("eager", "executorch", "tflite", "tflite-xnnpack", "mnn")
PARITY_STEPS = 3
LOSS_TOLERANCE = 1e-4  # relative to eager's loss
WEIGHT_TOLERANCE = 1e-2  # relative to the change eager's steps made to the weight: a missing gradient is 1


class TrainingSession(Protocol):
    def train_step(self, *batch) -> float: ...

    def get_weights(self) -> dict[str, np.ndarray]: ...


class EagerSession:
    """PyTorch eager: forward, backward and the SGD update, as the device would do them, on a copy of the program."""

    def __init__(self, program: DeviceProgram):
        self.module = copy.deepcopy(program.module)
        self.params = {n: p for n, p in self.module.named_parameters() if p.requires_grad}
        self.lr = program.optimizer.lr

    def train_step(self, *batch: torch.Tensor) -> float:
        loss = self.module(*batch)
        sgd_step(list(self.params.values()), torch.autograd.grad(loss, list(self.params.values())), self.lr)
        return float(loss.detach())

    def get_weights(self) -> dict[str, np.ndarray]:
        return {n: p.detach().numpy().copy() for n, p in self.params.items()}


# ---------------------------------------------------------------------------------------------- sessions

def training_sessions(program: DeviceProgram, batch: tuple[torch.Tensor, ...],
                      stock: dict[str, tuple[Path, ManifestEntry]], fast: TrainingSession, peers: bool = True
                      ) -> tuple[dict[str, TrainingSession], dict[str, str]]:
    """Every runtime's session of one training program, fresh (at the program's weights), in ``RUNTIMES`` order,
    and for a runtime that cannot run it, the one-line reason. ``stock``: the stock ExecuTorch and LiteRT
    artifacts (folder, manifest entry) by format; ``peers=False`` leaves out LiteRT and MNN (quick runs)."""
    sessions: dict[str, TrainingSession] = {"eager": EagerSession(program)}
    reasons: dict[str, str] = {}
    folder, entry = stock["executorch"]
    sessions["executorch"] = get_runtime("executorch").load(folder / entry.file, entry)
    if peers:
        folder, entry = stock["tflite"]
        for label, xnnpack in (("tflite", False), ("tflite-xnnpack", True)):
            sessions[label] = get_runtime("tflite").load(folder / entry.file, entry, xnnpack=xnnpack)
        from dcx.bench import mnn

        try:
            sessions["mnn"] = mnn.load(program, batch)
        except mnn.MnnCannotTrain as e:
            reasons["mnn"] = str(e)
    sessions[FAST] = fast
    return sessions, reasons


def _inputs(session: TrainingSession, batch: tuple[torch.Tensor, ...]) -> tuple:
    """Eager takes the batch as tensors, the runtimes as numpy arrays (what their apps hand them)."""
    return batch if isinstance(session, EagerSession) else tuple(t.numpy() for t in batch)


@dataclass
class Parity:
    """How far a runtime's first steps are from eager's: the largest relative loss difference, and the largest
    weight difference relative to the change eager's steps made to that weight (at least 1 % of the largest
    change of any weight)."""

    loss: float
    weights: float

    def ok(self) -> bool:
        return self.loss <= LOSS_TOLERANCE and self.weights <= WEIGHT_TOLERANCE


def check_parity(sessions: dict[str, TrainingSession], batch: tuple[torch.Tensor, ...], initial: dict[str, np.ndarray],
                 steps: int = PARITY_STEPS) -> dict[str, Parity]:
    """``steps`` SGD steps of every session on ``batch`` from the program's weights (``initial``), compared with
    eager's. The steps also warm the sessions up."""
    losses = {k: [s.train_step(*_inputs(s, batch)) for _ in range(steps)] for k, s in sessions.items()}
    weights = {k: s.get_weights() for k, s in sessions.items()}
    ref_losses, ref = losses["eager"], weights["eager"]
    moved = {n: float(np.abs(ref[n] - initial[n]).max()) for n in ref}
    floor = 0.01 * max(moved.values(), default=0.0) or 1.0  # a weight that barely moved: float rounding, not a bug
    moved = {n: max(m, floor) for n, m in moved.items()}
    out = {}
    for k in sessions:
        loss = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses[k], ref_losses))
        got = weights[k]
        missing = set(ref) - set(got)
        w = float("inf") if missing else max(float(np.abs(got[n] - ref[n]).max()) / moved[n] for n in ref)
        out[k] = Parity(loss, w)
    return out


def time_training(program: DeviceProgram, batch: tuple[torch.Tensor, ...], sessions: dict[str, TrainingSession],
                  reasons: dict[str, str], rounds: int, warmup: int = PARITY_STEPS,
                  progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Parity first (a peer computing something else is left out, with the difference as its reason), then every
    session's step timed side by side (``time_side_by_side``, ``warmup`` steps counting the parity ones): one
    ``train_step`` row per runtime, with ``unavailable`` instead of times where it did not run."""
    initial = {n: p.detach().numpy().copy() for n, p in program.trainable.items()}
    parity = check_parity(sessions, batch, initial)
    if not parity[FAST].ok():
        raise RuntimeError(f"{program.name}: executorch-fast trains differently from eager: {parity[FAST]}")
    timed = {}
    for k, p in parity.items():
        if p.ok():
            timed[k] = sessions[k]
        else:
            reasons[k] = (f"differs from eager after {PARITY_STEPS} steps (loss by {p.loss:.1e}, weights by "
                          f"{p.weights:.1e} of their change): not the same computation")
    steps = {k: (lambda s=s, b=_inputs(s, batch): s.train_step(*b)) for k, s in timed.items()}
    for step in steps.values():
        for _ in range(max(0, warmup - PARITY_STEPS)):
            step()
    samples = time_side_by_side(steps, rounds=rounds, target_s=0.004)
    eager = statistics.median(samples["eager"])
    rows = []
    for k in RUNTIMES:
        if k in samples:
            median = statistics.median(samples[k])
            rows.append({"measure": "train_step", "program": program.name, "runtime": k, "median_step_s": median,
                         "best_step_s": min(samples[k]), "ratio_to_eager": median / eager, "rounds": rounds,
                         "parity_loss": parity[k].loss, "parity_weights": parity[k].weights})
            progress(f"{program.name:<24} {k:<16} {median * 1e3:9.3f} ms/step")
        elif k in reasons:
            rows.append({"measure": "train_step", "program": program.name, "runtime": k, "unavailable": reasons[k]})
            progress(f"{program.name:<24} {k:<16} not run: {reasons[k]}")
    return rows


# ---------------------------------------------------------------------------------------------- the benchmark

def bench_runtimes(recipe: str = "all", rounds: int = 15, warmup: int = PARITY_STEPS, peers: bool = True,
                   progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Every training program of ``recipe`` (``all``: the three methods) in every runtime, and export time per
    format; ``peers=False`` leaves out LiteRT and MNN."""
    rows: list[dict] = []
    with one_thread(), tempfile.TemporaryDirectory() as tmp:
        out, fast_out = Path(tmp) / "artifacts", Path(tmp) / "fast"
        export_seconds = {}
        stock = {"executorch": ExecuTorchOptions(fast_training=False)}
        for label, fmt, folder, options in [*((f, f, out, stock) for f in formats()),
                                            (FAST, "executorch", fast_out, None)]:
            summary = export_recipe(recipe, fmt, folder, force=True, options=options, progress=progress)
            if summary.failed:
                raise DcxError(f"bench: exporting {label} failed: {summary.failed[0].error}")
            export_seconds[label] = summary.seconds_per_format.get(fmt, 0.0)
        entries = [e for e in read_manifest(out).artifacts if e.kind == "train"]
        fast_entries = {e.program: e for e in read_manifest(fast_out).artifacts if e.kind == "train"}
        for name in sorted(fast_entries):
            program = get_program(name)
            batch = tuple(program.example_batches(1)[0])
            artifacts = {e.format: (out, e) for e in entries if e.program == name}
            fast = get_runtime("executorch").load(fast_out / fast_entries[name].file, fast_entries[name])
            sessions, reasons = training_sessions(program, batch, artifacts, fast, peers=peers)
            rows += time_training(program, batch, sessions, reasons, rounds, warmup, progress)
        for fmt, seconds in export_seconds.items():
            rows.append({"program": f"every {recipe} program" if recipe != "all" else "every program",
                         "runtime": fmt, "measure": "export", "export_s": seconds})
    return rows


# ---------------------------------------------------------------------------------------------- the targets

@dataclass(frozen=True)
class Target:
    key: str  # as it appears in verdict lines
    text: str
    peers: tuple[str, ...]  # judged against the fastest of these (each at its best round)
    factor: float  # dcx's median step must be this many times faster (and faster at all)


TARGETS = (
    Target("2x-eager", "at least 2x faster than eager", ("eager",), 2.0),
    Target("faster-than-litert", "faster than the fastest LiteRT configuration (builtin kernels or XNNPACK)",
           ("tflite", "tflite-xnnpack"), 1.0),
    Target("faster-than-mnn", "faster than MNN", ("mnn",), 1.0),
    Target("20x-stock", "at least 20x faster than stock ExecuTorch where stock is slower than eager",
           ("executorch",), 20.0),
)
TARGETS_TEXT = "; ".join(t.text for t in TARGETS)
VERDICTS = ("met", "not met", "n/a")


def judge(rows: list[dict]) -> list[dict]:
    """Per training program with an ``executorch-fast`` row, each target's ratio (the fastest round of the target's
    peers over dcx's median step) and verdict, and the strongest peer (the fastest at its best round). A target
    whose peers were not all measured is ``n/a``, with the reason; so is ``20x-stock`` where stock is not slower
    than eager (its median under eager's best round)."""
    steps: dict[str, dict[str, dict]] = {}
    for r in rows:
        if r["measure"] == "train_step":
            steps.setdefault(r["program"], {})[r["runtime"]] = r
    out = []
    for program, runs in steps.items():
        if "median_step_s" not in runs.get(FAST, {}):
            continue
        fast = runs[FAST]["median_step_s"]
        best = {k: r["best_step_s"] for k, r in runs.items() if k != FAST and "best_step_s" in r}
        judged = {"program": program, "fast_median_s": fast, "targets": {}}
        for t in TARGETS:
            missing = [p for p in t.peers if p not in best]
            if missing:
                why = "; ".join(f"{p}: {runs[p]['unavailable']}" if p in runs else f"{p}: not measured in this run"
                                for p in missing)
                judged["targets"][t.key] = {"verdict": "n/a", "ratio": None, "why": why}
                continue
            if t.key == "20x-stock" and not runs["executorch"]["median_step_s"] > best["eager"]:
                judged["targets"][t.key] = {"verdict": "n/a", "ratio": None, "why": "stock is not slower than eager"}
                continue
            peer = min(t.peers, key=best.get)
            ratio = best[peer] / fast
            judged["targets"][t.key] = {"verdict": "met" if ratio >= t.factor and ratio > 1 else "not met",
                                        "ratio": ratio, "peer": peer}
        if best:
            strongest = min(best, key=best.get)
            judged["strongest"] = {"runtime": strongest, "best_step_s": best[strongest],
                                   "ratio": best[strongest] / fast}
        out.append(judged)
    return out


def verdict_lines(judgments: list[dict]) -> list[str]:
    """The machine-readable verdicts, one per program and target: ``verdict: PROGRAM TARGET: met|not met|n/a``."""
    return [f"verdict: {j['program']} {key}: {t['verdict']}" for j in judgments for key, t in j["targets"].items()]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


JUDGED_IN = "`benchmarks/runtimes.md` and `benchmarks/runtimes_mnv2.md` (`dcx bench runtimes`)"


def steps_markdown(rows: list[dict], judge_targets: bool = True) -> list[str]:
    """The step table of every runtime and, with ``judge_targets``, the judgment of each target and the verdict
    lines. ``dcx bench runtimes`` judges; ``dcx bench training`` writes the same table without judging, because a
    target judged by two runs is judged twice on a noisy machine, and the two could disagree."""
    judgments = {j["program"]: j for j in judge(rows)}
    lines = ["Runtimes: " + "; ".join(f"`{k}`: {v}" for k, v in RUNTIMES.items()) + ".", "",
             f"`vs dcx`: the runtime's fastest round over `{FAST}`'s median step (conservative: noise can only "
             f"lower it). `parity`: after {PARITY_STEPS} SGD steps from the same weights on the same batch, the "
             "largest loss difference from eager (relative) and weight difference (relative to the change eager "
             "made); a peer outside the tolerances is not run.", "",
             "| program | runtime | median step ms | best round ms | vs dcx | parity: loss, weights |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["measure"] != "train_step":
            continue
        j = judgments.get(r["program"])
        if "unavailable" in r:
            lines.append(f"| {r['program']} | {r['runtime']} | - | - | - | not run: {r['unavailable']} |")
            continue
        vs = "-" if r["runtime"] == FAST or j is None else f"{r['best_step_s'] / j['fast_median_s']:.2f}x"
        parity = "reference" if r["runtime"] == "eager" else f"{r['parity_loss']:.0e}, {r['parity_weights']:.0e}"
        lines.append(f"| {r['program']} | {r['runtime']} | {_ms(r['median_step_s'])} | {_ms(r['best_step_s'])} | "
                     f"{vs} | {parity} |")
    if not judge_targets:
        return lines + ["", f"The targets are judged once, in {JUDGED_IN}; this table is the step beside the "
                        "kernels it ran."]
    lines += ["", "Targets for `executorch-fast`: " + TARGETS_TEXT + ".", ""]
    for j in judgments.values():
        s = j.get("strongest")
        lines.append(f"- **{j['program']}**: median step {_ms(j['fast_median_s'])} ms"
                     + (f"; strongest peer `{s['runtime']}` (best round {_ms(s['best_step_s'])} ms): "
                        f"{s['ratio']:.2f}x" if s else ""))
        for key, t in j["targets"].items():
            detail = (f"{t['ratio']:.2f}x against `{t['peer']}`'s best round" if t["ratio"] is not None
                      else t["why"])
            lines.append(f"  - {key}: {detail} -> {t['verdict']}")
    lines += ["", "```", *verdict_lines(list(judgments.values())), "```"]
    return lines


def render_markdown(rows: list[dict], command: str, stamp_text: str) -> str:
    """``benchmarks/runtimes*.md``: the step table and the targets (``steps_markdown``) and export time per format."""
    rounds = next((r["rounds"] for r in rows if "rounds" in r), 0)
    lines = ["# On-device training step per runtime", "",
             f"Written by `{command}`: single-threaded, {rounds} interleaved rounds.", "", stamp_text, "",
             *steps_markdown(rows), "", "| export | seconds |", "|---|---|"]
    lines += [f"| {r['runtime']} ({r['program']}) | {r['export_s']:.2f} |" for r in rows if r["measure"] == "export"]
    return "\n".join(lines) + "\n"
