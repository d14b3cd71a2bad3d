"""``dcx simulate METHOD``: the cloud phase, the device programs exported once, the rounds on an engine, the report.

1. The cloud phase comes from ``--checkpoint`` or is trained here (and kept as
   a checkpoint in a scratch folder, as ``dcx train`` writes it).
2. The device programs are exported once for ``--device-runtime`` (ExecuTorch
   by default, LiteRT, or the eager PyTorch reference), and each one's step
   time is measured on its artifact: the virtual clock's nominal phone.
3. ``rounds`` rounds run on the engine; then the method's baselines are
   computed in eager PyTorch with the recipe's own functions (DC-CCL's
   uncontrolled FedAvg replays the devices that reported in each round).
4. After every round the JSON (``--json``, and ``<method>.json`` in ``--out``)
   is rewritten atomically with the finished rounds, so Ctrl-C keeps them;
   at the end ``--out`` also gets a Markdown table and the plots. Both carry
   the stamp of the code and machine that measured them (``dcx.stamp``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from dcx.errors import DcxError
from dcx.fileio import check_writable_folder, os_errors, write_atomic
from dcx.simulate import engines
from dcx.simulate.clock import Clock, check_deadline, measure_step_seconds
from dcx.simulate.faults import REPORTED, FaultPlan
from dcx.simulate.methods import Method, Setup, get_method
from dcx.simulate.programs import check_runtime, package_programs
from dcx.simulate.roles import DeviceSpec
from dcx.stamp import current_stamp
from dcx.progress import Progress, silent



def simulate(method: str, *, devices: int | None = None, rounds: int | None = None, runtime: str = "executorch",
             engine: str = "local", dropout: float = 0.0, stragglers: float = 0.0, deadline: float | None = None,
             quick: bool = False, seed: int = 0, checkpoint: Path | None = None, json_path: Path | None = None,
             out: Path | None = None, force: bool = False, baselines: bool = True, measure: bool = True,
             workers: int | None = None, tap: engines.Tap | None = None,
             progress: Progress = silent) -> dict[str, Any]:
    """Run METHOD's cloud and device roles for ``rounds`` rounds with ``devices`` devices; returns the JSON document.

    ``stragglers``: the share of slow devices; ``deadline``: seconds per exchange on the virtual clock (None: twice
    the longest nominal work, ``clock.py``). ``baselines=False`` skips the eager baselines and ``measure=False`` the
    per-round metric (benchmarks); ``workers``: Ray actors of the Flower engine (default: one per CPU); ``tap``
    sees every message that crossed.
    """
    m = get_method(method)
    engines.check_engine(engine)
    check_runtime(runtime)
    check_deadline(deadline)
    plan = FaultPlan(dropout, stragglers, seed)
    devices = m.devices[quick] if devices is None else devices
    rounds = m.rounds[quick] if rounds is None else rounds
    if devices < 1:
        raise DcxError(f"--devices {devices}: at least one device")
    if rounds < 1:
        raise DcxError(f"--rounds {rounds}: at least one round")
    outputs = _outputs(m, json_path, out, force)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="dcx-simulate-") as scratch:
        recipe, modules, source = m.cloud_phase(m, devices, quick, seed, checkpoint, Path(scratch), progress)
        setup = Setup(recipe, modules, seed, devices, rounds, {}, progress, measure)
        progress(f"exporting the device programs for {runtime}")
        programs = m.programs(setup)
        setup.packages = package_programs(programs, runtime, Path(scratch) / "artifacts")
        progress("measuring each device program's step time on this host")
        clock = Clock(measure_step_seconds(programs, setup.packages, runtime), deadline)
        store = Path(scratch) / "device-storage"
        store.mkdir()
        spec = DeviceSpec(method, recipe.cfg, seed, devices, rounds, runtime, str(store))
        cloud = m.cloud_role(setup)
        doc = {"method": method, "engine": engine, "device_runtime": runtime, "devices": devices,
               "rounds_planned": rounds, "seed": seed, "quick": quick, "dropout": dropout, "stragglers": stragglers,
               "deadline": deadline, "step_seconds": clock.step_seconds, "checkpoint": source, "complete": False,
               "stamp": current_stamp(torch.get_num_threads()).as_dict(), "baselines": {}, "rounds": [],
               "summary": {}}

        def on_round(record: dict) -> None:
            doc["rounds"].append(record)
            setup.reported.append([row["device"] for row in record["devices"] if row["status"] == REPORTED])
            doc["summary"] = _summary(m, doc, cloud.summary())
            outputs.write_json(doc)
            progress(_round_line(m, record, rounds))

        progress(f"{rounds} round(s), {devices} device(s), engine {engine}, device runtime {runtime}")
        engines.run(engine, cloud, spec, plan, clock, on_round, workers, tap)
        if baselines:
            doc["baselines"] = m.baselines(setup)
    doc["complete"] = True
    doc["summary"] = _summary(m, doc, cloud.summary())
    outputs.write_json(doc)
    outputs.write_report(doc)
    return doc


def _summary(m: Method, doc: dict, result: dict[str, float]) -> dict[str, float]:
    summary = {**doc["baselines"], **result}
    summary.update(m.derived(summary))
    summary["rounds_completed"] = len(doc["rounds"])
    for key in ("bytes_down", "bytes_up", "flower_bytes_down", "flower_bytes_up"):
        if doc["rounds"] and key in doc["rounds"][0]:
            summary[f"{key}_total"] = sum(r[key] for r in doc["rounds"])
    summary["virtual_s_total"] = round(sum(r["virtual_s"] for r in doc["rounds"]), 6)
    return summary


def _round_line(m: Method, r: dict, rounds: int) -> str:
    metric = r["metrics"].get(m.headline)
    flower = (f" (Flower {r['flower_bytes_down']:,} B / {r['flower_bytes_up']:,} B)"
              if "flower_bytes_down" in r else "")
    return (f"[round {r['round']}/{rounds}] {r['devices_reported']}/{r['devices_asked']} reported "
            f"({r['devices_vanished']} vanished, {r['devices_late']} past the {r['deadline_s']:.3g} s deadline, "
            f"virtual round {r['virtual_s']:.3g} s)  down {r['bytes_down']:,} B  up {r['bytes_up']:,} B{flower}"
            + (f"  {m.headline} {metric:.4f}" if metric is not None else "") + f"  {r['seconds']:.1f} s")


class _Outputs:
    """Where the results go: ``--json`` and ``--out`` (never half-written; files dcx did not write are kept)."""

    def __init__(self, m: Method, json_path: Path | None, out: Path | None):
        self.m, self.json_path, self.out = m, json_path, out

    def write_json(self, doc: dict) -> None:
        text = json.dumps(doc, indent=1)
        for path, flag in ((self.json_path, "--json"), (self.out and self.out / f"{self.m.name}.json", "--out")):
            if path is not None:
                with os_errors(path, flag):
                    write_atomic(path, text)

    def write_report(self, doc: dict) -> None:
        if self.out is not None:
            from dcx.simulate.report import write_run_report

            with os_errors(self.out, "--out"):
                write_run_report(doc, self.out)


def _outputs(m: Method, json_path: Path | None, out: Path | None, force: bool) -> _Outputs:
    """Check the output paths before any long work."""
    if json_path is not None:
        json_path = Path(json_path)
        if json_path.is_dir():
            raise DcxError(f"--json {json_path} is a folder: give a file path")
        check_writable_folder(json_path.parent if str(json_path.parent) else Path("."), "--json")
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise DcxError(f"--out {out} is a file: choose a folder path")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise DcxError(f"--out {out} exists and is not empty: pass --force to write the results there "
                           "(dcx replaces only the files it writes), or choose a new folder")
        check_writable_folder(out, "--out")
    return _Outputs(m, json_path, out)
