"""The ``dcx`` command line. Each command is a thin shell over one module of the toolchain."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
from pathlib import Path

import click

from dcx.errors import DcxError
from dcx.simulate.cli import simulate_cmd  # click only: torch is imported when it runs

BACKEND_PACKAGES = ("torch", "executorch", "tensorflow-cpu", "ai-edge-litert", "coremltools", "onnx",
                    "onnxruntime", "flwr", "ray", "numpy")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """dcx: device-cloud collaborative learning, from PyTorch recipes to artifacts phones run and train."""


@cli.command()
def info() -> None:
    """The registered backends, methods and targets; the versions of the packages behind them; the datasets."""
    from dcx.backends import formats, get_runtime
    from dcx.data import fashion_mnist, movielens
    from dcx.kernels.library import CHECKOUT
    from dcx.methods import recipe_names
    from dcx.models import efficientnet_lite, mobilenetv2
    from dcx.targets import target_kinds
    from dcx.targets.host import native_build_dir

    for fmt in formats():
        reason = get_runtime(fmt).available()
        click.echo(f"backend {fmt:<12} {'runs here' if reason is None else 'exports here; ' + reason.split(';')[0]}")
    click.echo(f"methods          {', '.join(recipe_names())}")
    click.echo(f"targets          {', '.join(target_kinds())}")
    for pkg in BACKEND_PACKAGES:
        try:
            version = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        click.echo(f"{pkg:<16} {version}")
    checks = {
        "fashion-mnist": (fashion_mnist.is_available(), fashion_mnist.SETUP_HINT),
        "movielens-100k": (movielens.is_available(), movielens.SETUP_HINT),
    }
    for name, weights in (("mobilenet_v2 imagenet", mobilenetv2), ("effnet_lite0 imagenet", efficientnet_lite)):
        try:
            weights.imagenet_weights_path()
            checks[name] = (True, "")
        except DcxError:
            checks[name] = (False, weights.WEIGHTS_HINT)
    for name, (ok, hint) in checks.items():
        click.echo(f"{name:<22} {'present' if ok else 'MISSING: ' + hint}")
    bundle = native_build_dir() / "bundle"
    fix = "bash runtimes/native/build.sh, or dcx build aarch64" if CHECKOUT else "dcx build aarch64"
    click.echo(f"{'aarch64 bundle':<22} "
               f"{'present' if (bundle / 'bundle.json').is_file() else 'MISSING: ' + fix} ({bundle}; targets qemu, adb)")


@cli.command("build")
@click.argument("arch", type=click.Choice(["aarch64"]))
@click.option("--out", type=click.Path(file_okay=False), help="build root (default: the checkout's build/, or for an "
              "installed package the per-user cache where the qemu and adb targets look)")
def build_cmd(arch: str, out: str | None) -> None:
    """Cross-compile the kernel libraries and the native runner for ARCH and assemble the runner bundle that the qemu
    and adb targets push (needs the Debian cross compilers; says which when they are missing)."""
    from dcx.android.build import build_aarch64  # the android harness sits above every layer but this CLI
    from dcx.kernels.library import SOURCE_ROOT, build_root
    from dcx.targets.build import BuildError

    root = Path(out) if out else build_root()
    try:
        manifest = build_aarch64(SOURCE_ROOT, root, progress=lambda s: click.echo(s, err=True))
    except BuildError as e:
        raise DcxError(str(e)) from None
    click.echo(f"bundle: {len(manifest['files'])} files, {manifest['bytes'] / 2**20:.1f} MiB -> "
               f"{root / 'native' / 'bundle'} (targets: qemu, adb)")


def _set_option(f):
    return click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                        help="override a recipe config field (repeatable); `dcx recipes --config` lists them")(f)


@cli.command()
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON: each program's parameters and FLOPs")
@click.option("--config", "show_config", is_flag=True, help="also print each recipe's config fields and defaults")
def recipes(seed: int, as_json: bool, show_config: bool) -> None:
    """The recipes and their device programs, with parameter counts and FLOPs."""
    from dcx.methods import config_as_json, get_recipe, recipe_names

    described = []
    for recipe in map(get_recipe, recipe_names()):
        programs = [{"program": p.name, "kind": p.kind, "parameters": p.parameter_count(), "flops": p.flops(),
                     "activation_bytes": p.activation_bytes(), **p.metrics, "summary": p.summary}
                    for p in recipe.device_programs(seed)]
        described.append({"recipe": recipe.name, "summary": recipe.summary, "config": config_as_json(recipe.cfg),
                          "programs": programs})
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    click.echo(f"{'program':<28}{'kind':<7}{'trainable':>10}{'frozen':>10}{'fwd FLOPs':>15}{'bwd FLOPs':>15}"
               f"{'act. MB':>9}  summary")
    for r in described:
        click.echo(f"[{r['recipe']}] {r['summary']}")
        if show_config:
            click.echo("  config: " + ", ".join(f"{k}={v}" for k, v in r["config"].items()))
        for p in r["programs"]:
            n, f, a = p["parameters"], p["flops"], p["activation_bytes"]
            bwd = f"{f['backward']:,}" if "backward" in f else "-"
            act = max(a.values()) / 2**20
            extra = f" (ICIIA adds {p['iciia_overhead_flops_pct']:.2f} % FLOPs)" if "iciia_overhead_flops_pct" in p else ""
            click.echo(f"  {p['program']:<26}{p['kind']:<7}{n['trainable']:>10,}{n['frozen']:>10,}"
                       f"{f['forward']:>15,}{bwd:>15}{act:>9.2f}  {p['summary']}{extra}")


@cli.command()
@click.argument("recipe_name", metavar="RECIPE")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="checkpoint folder to write")
@click.option("--quick", is_flag=True, help="CI-sized settings (well under a minute)")
@click.option("--seed", default=0, show_default=True)
@_set_option
@click.option("--force", is_flag=True, help="replace an existing checkpoint at --out")
def train(recipe_name: str, out: str, quick: bool, seed: int, settings: tuple[str, ...], force: bool) -> None:
    """Run a recipe's cloud phase on its real data and write a checkpoint folder."""
    import torch

    from dcx.methods.checkpoint import INDEX, write_checkpoint
    from dcx.fileio import check_replaceable, check_writable_folder
    from dcx.methods import get_recipe, parse_overrides

    torch.set_num_threads(1)
    recipe = get_recipe(recipe_name, quick=quick, **parse_overrides(recipe_name, settings))
    check_replaceable(Path(out), force=force, marker=INDEX, what="checkpoint")  # before training, not after
    check_writable_folder(Path(out).parent)
    click.echo(f"[{recipe.name}] cloud phase{' (quick)' if quick else ''}, seed {seed}", err=True)
    trained = recipe.train(seed, progress=lambda s: click.echo(f"  {s}", err=True))
    ckpt = write_checkpoint(Path(out), recipe, trained, seed=seed, quick=quick, force=force)
    for k, v in ckpt.metrics.items():
        click.echo(f"  {recipe.name}.{k:<30} {v:.4f}")
    click.echo(f"checkpoint written to {out}")


@cli.command()
@click.option("--recipe", "recipe_name", default="all", show_default=True, help="a recipe name or all")
@click.option("--seed", default=0, show_default=True)
@_set_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="also write the metrics as JSON")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="also write the metrics as a Markdown table (for the README)")
def evaluate(recipe_name: str, seed: int, settings: tuple[str, ...], json_path: str | None,
             markdown_path: str | None) -> None:
    """Run the methods end to end on their real data (built-in CI-sized defaults) and print their metrics."""
    import torch

    from dcx.methods import parse_overrides, resolve_recipes
    from dcx.stamp import current_stamp, stamp_line

    if settings and recipe_name == "all":
        raise DcxError("--set needs one recipe: pass --recipe NAME")
    torch.set_num_threads(1)
    stamp = current_stamp(torch.get_num_threads())  # what is measured: the checkout as the run starts
    overrides = parse_overrides(recipe_name, settings) if settings else {}
    results = {}
    for recipe in resolve_recipes(recipe_name, **overrides):
        click.echo(f"[{recipe.name}] training on real data ...", err=True)
        results[recipe.name] = recipe.evaluate(seed)
        for k, v in results[recipe.name].items():
            click.echo(f"  {recipe.name}.{k:<32} {v:.4f}")
    _write_json(json_path, {"stamp": stamp.as_dict(), "results": results})
    if markdown_path:
        from dcx.fileio import os_errors, write_atomic

        command = " ".join(["dcx evaluate", f"--recipe {recipe_name}", *(f"--set {x}" for x in settings),
                            f"--seed {seed}"])
        lines = [f"Written by `{command} --markdown {markdown_path}`.", "", stamp_line(stamp), "",
                 "| metric | value |", "| --- | --- |"]
        lines += [f"| {name}.{k} | {v:.4f} |" for name, metrics in results.items() for k, v in metrics.items()]
        with os_errors(markdown_path, "--markdown"):
            write_atomic(Path(markdown_path), "\n".join(lines) + "\n")


@cli.command("export")
@click.option("--recipe", "recipe_name", help="a recipe (`dcx recipes` lists them) or all (dcccl, iciia, coda), "
              "initialised from --seed")
@click.option("--checkpoint", type=click.Path(), help="a checkpoint folder from `dcx train`: export its trained programs")
@click.option("--format", "fmt", default="all", show_default=True, help="executorch, tflite, coreml, onnx or all")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--force", is_flag=True, help="replace what an earlier dcx export wrote in --out")
@click.option("--fused-kernels", is_flag=True, help="ICIIA projections as the fused dcx:: op (ExecuTorch)")
@click.option("--fast-training/--no-fast-training", default=True, show_default=True,
              help="ExecuTorch training programs on the dcx training kernels (else ExecuTorch's portable kernels)")
@click.option("--seed", default=0, show_default=True, help="initialisation seed (without --checkpoint)")
@click.option("--user", type=int, help="CoDA: the MovieLens user whose personal programs to build")
@click.option("--reference-steps", default=20, show_default=True,
              help="real-data SGD steps in each training program's reference (what verify trains)")
@_set_option
def export_cmd(recipe_name: str | None, checkpoint: str | None, fmt: str, out: str, force: bool, fused_kernels: bool,
               fast_training: bool, seed: int, user: int | None, reference_steps: int,
               settings: tuple[str, ...]) -> None:
    """Export a recipe's device programs (trained from --checkpoint, or initialised) to artifacts + references."""
    from dcx.backends.executorch.options import ExecuTorchOptions
    from dcx.methods.export import export_recipe
    from dcx.methods import parse_overrides

    overrides = {}
    if settings:
        name = recipe_name or (_checkpoint_recipe(checkpoint) if checkpoint else None)
        if not name or name == "all":
            raise DcxError("--set needs one recipe: pass --recipe NAME or --checkpoint CKPT")
        overrides = parse_overrides(name, settings)
    summary = export_recipe(recipe_name, fmt, Path(out), checkpoint=Path(checkpoint) if checkpoint else None,
                            seed=seed, overrides=overrides, user=user, force=force,
                            options={"executorch": ExecuTorchOptions(fused_kernels=fused_kernels, fast_training=fast_training)},
                            reference_steps=reference_steps,
                            progress=lambda s: click.echo(s, err=True))
    click.echo(f"exported {len(summary.written)} artifacts to {out} "
               + " ".join(f"[{f}: {t:.1f}s]" for f, t in summary.seconds_per_format.items()))
    for f in summary.failed:
        click.echo(f"FAILED {f.format} {f.program}: {f.error}", err=True)
    if summary.failed:
        raise SystemExit(1)


def _checkpoint_recipe(checkpoint: str) -> str:
    from dcx.methods.checkpoint import read_checkpoint

    return read_checkpoint(Path(checkpoint)).recipe


@cli.command("verify")
@click.argument("out", type=click.Path())
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the rows as JSON")
@click.option("--program", "program_filter", help="only artifacts whose program starts with this")
@click.option("--strict", is_flag=True, help="a check that could not run here (and a format that failed at export) "
                                             "fails the run")
def verify_cmd(out: str, json_path: str | None, program_filter: str | None, strict: bool) -> None:
    """Run every artifact in its real runtime and compare with its reference; non-zero exit on any failure."""
    import torch

    from dcx.fileio import os_errors, write_atomic
    from dcx.verification import failed, format_table, rows_as_json, summary, verify

    torch.set_num_threads(1)
    rows = verify(Path(out), program_filter=program_filter)
    click.echo(format_table(rows))
    click.echo(summary(rows) + (" (--strict: not run fails)" if strict else ""))
    if json_path:
        with os_errors(json_path, "--json"):
            write_atomic(Path(json_path), json.dumps(rows_as_json(rows), indent=2))
    if failed(rows, strict):
        raise SystemExit(1)


@cli.command("profile")
@click.argument("out", type=click.Path())
@click.option("--target", "target_spec", default="host", show_default=True,
              help="host, qemu (the aarch64 bundle emulated) or adb[:SERIAL] (a phone)")
@click.option("--programs", help="comma-separated program names (default: every artifact)")
@click.option("--iterations", default=20, show_default=True, help="timed inferences per artifact")
@click.option("--warmup", default=3, show_default=True, help="untimed inferences before them")
@click.option("--per-op", is_flag=True, help="ExecuTorch: the top operators by time, from an ETDump")
@click.option("--tflite-benchmark", type=click.Path(dir_okay=False), help="your arm64 LiteRT benchmark_model: "
              "profile .tflite artifacts with it on a phone")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the rows as JSON")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="write a latency and memory chart")
def profile_cmd(out: str, target_spec: str, programs: str | None, iterations: int, warmup: int, per_op: bool,
                tflite_benchmark: str | None, json_path: str | None, png_path: str | None) -> None:
    """Profile every artifact of an export folder on a target: latency, memory, FLOPs, size, outputs checked."""
    from dcx.fileio import os_errors, write_atomic
    from dcx.profile import plot, profile, rows_as_json
    from dcx.targets import get_target

    rows: list = []

    def save() -> None:
        if json_path:
            with os_errors(json_path, "--json"):
                write_atomic(Path(json_path), json.dumps(rows_as_json(rows), indent=2))

    try:
        profile(Path(out), get_target(target_spec), programs=programs.split(",") if programs else None,
                iterations=iterations, warmup=warmup, per_op=per_op,
                tflite_benchmark=Path(tflite_benchmark) if tflite_benchmark else None,
                progress=lambda s: click.echo(s, err=True), rows=rows)
    except DcxError:
        save()  # the rows measured before the failure are kept
        raise
    save()
    if png_path:
        plot(rows, Path(png_path))
    for r in rows:
        for op in r.top_operators[:5]:
            click.echo(f"{r.program:<26} {r.format:<10} {op['operator']:<40} {op['ms_per_run']:.4f} ms/run"
                       + (f"  {op['share']:.0%}" if op["share"] else ""))
    differ = [r for r in rows if r.outputs_match is False]
    click.echo(f"{len(rows)} artifacts: {sum(not r.skipped for r in rows)} profiled, "
               f"{sum(bool(r.skipped) for r in rows)} skipped, {len(differ)} with outputs differing from the reference")
    if differ:
        raise SystemExit(1)


class LazyGroup(click.Group):
    """Subcommands defined next to what they measure, imported only when invoked (keeps `dcx --help` fast)."""

    lazy = {"kernels": "dcx.bench.kernels:bench_kernels", "training": "dcx.bench.training:bench_training",
            "simulate": "dcx.bench.simulate:bench_simulate"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@cli.group(cls=LazyGroup)
def bench() -> None:
    """Benchmarks: side by side in one run, single-threaded, reported as ratios."""


@bench.command("runtimes")
@click.option("--recipe", "recipe_name", default="all", show_default=True)
@click.option("--rounds", default=15, show_default=True, help="timed rounds per runtime (after 3 parity steps)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="write the stamp, rows and judgments as JSON")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="write the table as Markdown (e.g. benchmarks/runtimes.md)")
def bench_runtimes_cmd(recipe_name: str, rounds: int, json_path: str | None, markdown_path: str | None) -> None:
    """One training step per training program in eager, stock ExecuTorch, LiteRT (builtin kernels, and XNNPACK),
    MNN and dcx's fast ExecuTorch, checked against eager; export time per format; the targets judged."""
    from dcx.bench.runtimes import bench_runtimes, judge, render_markdown
    from dcx.stamp import current_stamp, stamp_line

    stamp = current_stamp(1)  # what is measured: the checkout as the run starts
    rows = bench_runtimes(recipe_name, rounds, progress=lambda s: click.echo(s, err=True))
    command = " ".join(["dcx bench runtimes", *(["--recipe", recipe_name] if recipe_name != "all" else []),
                        *(["--rounds", str(rounds)] if rounds != 15 else []),
                        *(["--markdown", markdown_path] if markdown_path else [])])
    text = render_markdown(rows, command, stamp_line(stamp))
    click.echo(text)
    _write_json(json_path, {"stamp": stamp.as_dict(), "rows": rows, "judgments": judge(rows)})
    if markdown_path:
        from dcx.fileio import os_errors, write_atomic

        with os_errors(markdown_path, "--markdown"):
            write_atomic(Path(markdown_path), text)


def _write_json(path: str | None, data: object, flag: str = "--json") -> None:
    if path:
        from dcx.fileio import os_errors, write_atomic

        with os_errors(path, flag):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(Path(path), json.dumps(data, indent=2))


@bench.command("native")
@click.argument("out", type=click.Path())
@click.option("--rounds", default=7, show_default=True, help="alternating rounds per artifact")
@click.option("--iterations", default=200, show_default=True, help="timed inferences per round")
@click.option("--qemu-instructions", is_flag=True, help="also count guest instructions per inference under qemu")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the rows as JSON")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="write the table as Markdown (e.g. benchmarks/native.md)")
def bench_native_cmd(out: str, rounds: int, iterations: int, qemu_instructions: bool, json_path: str | None,
                     markdown_path: str | None) -> None:
    """The native runner against ExecuTorch's Python pybindings, per inference artifact of an export folder."""
    from dcx.bench.native import bench_native, markdown
    from dcx.stamp import current_stamp, stamp_line
    from dcx.targets import get_target

    stamp = current_stamp(1)  # what is measured: the checkout as the run starts
    rows = bench_native(Path(out), rounds, iterations, instructions_target=get_target("qemu") if qemu_instructions
                        else None, progress=click.echo)
    _write_json(json_path, {"stamp": stamp.as_dict(), "rows": rows})
    if markdown_path:
        from dcx.fileio import os_errors, write_atomic

        command = f"dcx bench native {out} --rounds {rounds} --iterations {iterations}" + \
            (" --qemu-instructions" if qemu_instructions else "") + f" --markdown {markdown_path}"
        with os_errors(markdown_path, "--markdown"):
            write_atomic(Path(markdown_path), markdown(rows, command, stamp_line(stamp)))
    slower = [r for r in rows if r["ratio"] > 1.0]
    click.echo(f"{len(rows)} programs: runner / pybindings p50 ratio "
               f"{min(r['ratio'] for r in rows):.2f} .. {max(r['ratio'] for r in rows):.2f}"
               + (f"; slower than the pybindings: {', '.join(r['program'] for r in slower)}" if slower else ""))


@bench.command("verify")
@click.option("--recipes", help="comma-separated recipe names (default: every recipe and variant)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the rows as JSON")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="write the tables as Markdown (e.g. benchmarks/verify.md)")
def bench_verify_cmd(recipes: str | None, json_path: str | None, markdown_path: str | None) -> None:
    """Every recipe and variant exported with default options and verified at the default steps and batch; exits
    non-zero when any artifact fails."""
    from dcx.bench.verify import bench_verify, markdown
    from dcx.methods import get_recipe

    names = [n.strip() for n in recipes.split(",")] if recipes else None
    for name in names or []:
        get_recipe(name)  # an unknown name is a one-line error before anything runs
    result = bench_verify(names, progress=lambda s: click.echo(s, err=True))
    command = "dcx bench verify" + (f" --recipes {recipes}" if recipes else "") + \
        (f" --markdown {markdown_path}" if markdown_path else "")
    text = markdown(result, command)
    click.echo(text)
    _write_json(json_path, result)
    if markdown_path:
        from dcx.fileio import os_errors, write_atomic

        with os_errors(markdown_path, "--markdown"):
            write_atomic(Path(markdown_path), text)
    if any(a["verdict"] == "FAIL" for a in result["artifacts"]):
        raise SystemExit(1)


@bench.command("device")
@click.option("--target", "target_spec", default="qemu", show_default=True, help="qemu, host or adb[:SERIAL]")
@click.option("--programs", help="comma-separated, of the bench's programs (default: all)")
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False),
              help="qemu: the instruction counts to check against [default: benchmarks/qemu_instructions.json]")
@click.option("--update-baseline", is_flag=True,
              help="qemu: rewrite --baseline from this run's counts (a deliberate change: say why in the commit)")
@click.option("--json", "json_path", default="out/bench/device.json", show_default=True,
              type=click.Path(dir_okay=False), help="where the rows go")
def bench_device_cmd(target_spec: str, programs: str | None, baseline_path: str | None, update_baseline: bool,
                     json_path: str) -> None:
    """One inference and one training program per recipe on a target, checked against the host and the reference;
    on qemu, their instructions per inference and per training step against the baseline (+2 % fails)."""
    from dcx.bench.instruction_guard import InstructionGuard
    from dcx.targets import get_target

    target = get_target(target_spec)
    guard = InstructionGuard.for_target(target_spec, baseline_path, update=update_baseline, complete=not programs)
    from dcx.bench.device import bench_device  # after the baseline is read: a bad one fails in a second

    rows = bench_device(target, programs=programs.split(",") if programs else None,
                        progress=lambda s: click.echo(s, err=True))
    bad = [r["program"] for r in rows if not r["ok"]]
    regressed = False
    if guard is not None and not (update_baseline and bad):  # a baseline is never rewritten from wrong outputs
        regressed = guard.apply(rows, click.echo)
    _write_json(json_path, rows)
    click.echo(f"{len(rows)} programs on {target_spec}: {len(rows) - len(bad)} match the host and the reference"
               + (f"; MISMATCH: {', '.join(bad)}" + (", baseline not rewritten" if update_baseline else "")
                  if bad else "") + f" (rows in {json_path})")
    if bad or regressed:
        raise SystemExit(1)


@cli.command("coverage")
@click.option("--quick", is_flag=True, help="CI sizes: small inputs and widths, random weights, 2 reference steps")
@click.option("--arch", "arch_names", multiple=True, metavar="NAME",
              help="an architecture (repeatable; default: all of `dcx.models.registry`)")
@click.option("--out", type=click.Path(file_okay=False), help="keep the artifacts here (default: a temporary folder)")
@click.option("--force", is_flag=True, help="replace what an earlier dcx coverage wrote in --out")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the cells as JSON")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="write the table as Markdown (e.g. benchmarks/coverage.md)")
def coverage_cmd(quick: bool, arch_names: tuple[str, ...], out: str | None, force: bool, json_path: str | None,
                 markdown_path: str | None) -> None:
    """Each architecture's training and inference program exported to every format and verified: a table of
    `verified` or the one-line reason per cell, and the fine-tuning check. Exits 0 with failing cells (they are
    the report); a bad option exits 2."""
    import tempfile

    import torch

    from dcx.coverage import as_json, markdown, run_coverage
    from dcx.fileio import os_errors, write_atomic
    from dcx.models.registry import architecture_names, get_architecture
    from dcx.stamp import current_stamp, stamp_line

    archs = [get_architecture(n) for n in arch_names or architecture_names()]  # an unknown name fails first
    torch.set_num_threads(1)
    stamp = current_stamp(1)  # what is measured: the checkout as the run starts
    command = " ".join(["dcx coverage", *(["--quick"] if quick else []), *(f"--arch {n}" for n in arch_names),
                        *(["--markdown", markdown_path] if markdown_path else [])])

    def write(results: list) -> None:
        _write_json(json_path, as_json(results, stamp.as_dict(), quick))
        if markdown_path:
            with os_errors(markdown_path, "--markdown"):
                write_atomic(Path(markdown_path), markdown(results, command, stamp_line(stamp), quick))

    progress = lambda s: click.echo(s, err=True)  # noqa: E731
    if out:
        occupied = Path(out).is_dir() and any(Path(out).iterdir())
        if Path(out).exists() and not Path(out).is_dir() or occupied and not force:
            raise DcxError(f"--out {out} is a file or a folder that is not empty: choose a new folder, or pass "
                           "--force to replace what an earlier dcx coverage exported there")
        results = run_coverage(archs, quick, Path(out), progress, write)
    else:
        with tempfile.TemporaryDirectory(prefix="dcx-coverage-") as tmp:
            results = run_coverage(archs, quick, Path(tmp), progress, write)
    click.echo(markdown(results, command, stamp_line(stamp), quick))


@cli.command("readme")
@click.option("--check", is_flag=True, help="only check: the README against the files, each file against the code it "
              "measures (its stamp), and the files' verdicts against each other; non-zero exit on any problem")
def readme_cmd(check: bool) -> None:
    """Copy the benchmark files' tables into README.md's measured sections (no number there is typed by hand)."""
    from dcx.readme import check_generated, sync

    changed = sync(check=check)
    for name in changed:
        click.echo(f"{'out of date' if check else 'updated'}: {name}")
    if not check:
        return
    problems = check_generated()
    for problem in problems:
        click.echo(problem)
    if problems or any("not written yet" not in c for c in changed):
        raise SystemExit(1)


@cli.command()
@click.option("--out", default="out/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--quick", is_flag=True, help="CI-sized cloud phases")
@click.option("--force", is_flag=True, help="replace what an earlier demo wrote in --out")
def demo(out: str, quick: bool, force: bool) -> None:
    """The end-to-end demo: train each method's cloud phase on real data, export the trained device programs to
    every format, verify every artifact, and score the exported inference artifacts on real held-out data."""
    from dcx.demo import run_demo

    failed = run_demo(Path(out), quick=quick, force=force, echo=click.echo)
    if failed:
        raise SystemExit(1)


cli.add_command(simulate_cmd)


def _quiet_third_party() -> None:
    """Import-time chatter of torchao/torch/TF is not the user's business."""
    import logging
    import os
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("torchao", "torch.utils._pytree", "torch._export", "torch.export", "executorch", "tensorflow",
                 "coremltools", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    _quiet_third_party()
    try:
        cli.main(standalone_mode=False)
    except DcxError as e:
        click.echo(f"dcx: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("dcx: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        hint = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) else ""
        click.echo(f"dcx: error: {e.format_message()}{hint}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("dcx: interrupted", err=True)
        sys.exit(130)
