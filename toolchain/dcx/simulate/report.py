"""What a simulation leaves for people: a Markdown table and two plots per run, and the README's results section.

``<method>.md`` (the stamp, summary and rounds), ``<method>_metric.png`` (the
method's metric per round, its baselines as lines) and ``<method>_bytes.png``
(bytes per round, down and up; on the Flower engine the Flower messages'
bytes beside the dcx payloads'). ``write_results`` puts several runs in one
file that ``dcx readme`` copies between two marker lines of the README.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from dcx.fileio import write_atomic
from dcx.stamp import Stamp, stamp_line

BASELINES = {  # the baselines drawn beside each method's metric
    "dcccl": ("acc_cloud_only", "acc_device_only", "acc_uncontrolled", "acc_central"),
    "iciia": ("acc_backbone",),
    "coda": ("auc_global", "auc_local_only", "auc_unfiltered"),
}


def _number(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.4f}"


def run_markdown(doc: dict) -> str:
    deadline = "2x the longest nominal work" if doc["deadline"] is None else f"{doc['deadline']:g} s"
    steps = ", ".join(f"`{name}` {seconds * 1e3:.3g} ms" for name, seconds in doc["step_seconds"].items())
    lines = [stamp_line(Stamp(**doc["stamp"])), "",
             f"**{doc['method']}**: {doc['devices']} devices, {len(doc['rounds'])} of {doc['rounds_planned']} rounds, "
             f"engine `{doc['engine']}`, device runtime `{doc['device_runtime']}`, dropout {doc['dropout']}, "
             f"slow devices {doc['stragglers']}, deadline {deadline}, seed {doc['seed']}"
             f"{', quick' if doc['quick'] else ''}. Step time of the nominal phone, measured here: {steps}.", "",
             "| summary | value |", "| --- | ---: |"]
    lines += [f"| {k} | {_number(v)} |" for k, v in doc["summary"].items()]
    metrics = sorted({k for r in doc["rounds"] for k in r["metrics"]})
    flower = any("flower_bytes_down" in r for r in doc["rounds"])
    columns = ["round", "reported", "vanished", "missed deadline", "deadline s", "virtual round s", "bytes down",
               "bytes up", *(["Flower bytes down", "Flower bytes up"] if flower else []), *metrics]
    lines += ["", "| " + " | ".join(columns) + " |", "| ---: " * len(columns) + "|"]
    for r in doc["rounds"]:
        cells = [r["round"], f"{r['devices_reported']}/{r['devices_asked']}", r["devices_vanished"],
                 r["devices_late"], f"{r['deadline_s']:.4g}", f"{r['virtual_s']:.4g}", f"{r['bytes_down']:,}",
                 f"{r['bytes_up']:,}"]
        cells += [f"{r['flower_bytes_down']:,}", f"{r['flower_bytes_up']:,}"] if flower else []
        cells += [_number(r["metrics"][k]) if k in r["metrics"] else "" for k in metrics]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def plots(doc: dict) -> dict[str, bytes]:
    """``<method>_metric.png`` and ``<method>_bytes.png`` of one run, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from dcx.simulate.methods import get_method

    method = doc["method"]
    headline = get_method(method).headline
    rounds = [r["round"] for r in doc["rounds"]]
    out = {}
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(rounds, [r["metrics"].get(headline, float("nan")) for r in doc["rounds"]], "o-", label=headline)
    for i, key in enumerate(k for k in BASELINES[method] if k in doc["summary"]):
        ax.axhline(doc["summary"][key], linestyle="--", color=f"C{i + 1}", label=key)
    ax.set(xlabel="round", ylabel=headline, title=f"{method}: {headline} per round", xticks=rounds)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out[f"{method}_metric.png"] = _png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    series = [(key, label) for key, label in (("bytes_down", "down"), ("flower_bytes_down", "down, Flower message"),
                                              ("bytes_up", "up"), ("flower_bytes_up", "up, Flower message"))
              if key in doc["rounds"][0]] if doc["rounds"] else []
    width = 0.8 / max(len(series), 1)
    for i, (key, label) in enumerate(series):
        ax.bar([r + (i - (len(series) - 1) / 2) * width for r in rounds], [r[key] for r in doc["rounds"]], width,
               label=label)
    ax.set_yscale("symlog", linthresh=1)  # a program going down once dwarfs the weights of every later round
    ax.set(xlabel="round", ylabel="bytes, all devices (log)", title=f"{method}: bytes per round", xticks=rounds)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out[f"{method}_bytes.png"] = _png(fig)
    plt.close(fig)
    return out


def write_run_report(doc: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{doc['method']}.md", run_markdown(doc))
    for name, data in plots(doc).items():
        write_atomic(out / name, data)


def write_results(docs: list[dict], out: Path, command: str) -> Path:
    """``out/README.md``: every run's table, verdict and plots (linked from the repository root, where
    ``dcx readme`` copies this file into the README's ``simulate`` section)."""
    from dcx.readme import REPO
    from dcx.simulate.methods import get_method

    rel = Path(os.path.relpath(out.resolve(), REPO))
    parts = ["# Simulated collaboration", "",
             f"Written by `{command}` (not run on CI); each run's JSON, table and plots are in `{rel}/`.", ""]
    for doc in docs:
        name = doc["method"]
        parts += [run_markdown(doc), get_method(name).verdict(doc["summary"]), "",
                  f"![{name} metric]({rel / (name + '_metric.png')}) ![{name} bytes]({rel / (name + '_bytes.png')})", ""]
    path = out / "README.md"
    write_atomic(path, "\n".join(parts))
    return path
