"""dcx simulate: the three methods as systems of cloud and device roles, on real data, with real runtimes.

Every run is a --quick one with few devices. The tests check what crosses the
wire (no raw sample up; bytes equal to the safetensors layout of the tensors,
computed here from the parameters' shapes; Flower's messages measured and
larger by a bounded envelope), that the device steps in ExecuTorch agree with
the eager reference, each claim's direction, the fault paths and the deadline
(a device past it is left out of the aggregate), the two engines agreeing,
Ctrl-C, the stamp, and the one-line errors.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from dcx.errors import DcxError
from dcx.simulate import simulate
from dcx.simulate.clock import Clock
from dcx.simulate.faults import LATE, NORMAL_SPEED, REPORTED, SLOW_SPEED, VANISHED, FaultPlan
from dcx.simulate.messages import Message

QUIET = {"progress": lambda s: None}


class Wire:
    """Every message that crossed, by direction, round, exchange and device."""

    def __init__(self):
        self.messages: dict[tuple[str, int, int], list[Message]] = defaultdict(list)

    def __call__(self, direction: str, round_no: int, exchange: str, device: int, message: Message) -> None:
        self.messages[(direction, round_no, device)].append(message)

    def up(self) -> list[tuple[int, Message]]:
        return [(k[2], m) for k, ms in self.messages.items() if k[0] == "up" for m in ms]


def run(method: str, folder, **kwargs) -> tuple[dict, Wire]:
    folder.mkdir(parents=True, exist_ok=True)
    wire = Wire()
    doc = simulate(method, quick=True, tap=wire, json_path=folder / f"{method}.json", **{**QUIET, **kwargs})
    return doc, wire


@pytest.fixture(scope="module")
def dcccl_runs(tmp_path_factory):
    """DC-CCL through the ExecuTorch training program (with baselines and the report), and the eager reference."""
    folder = tmp_path_factory.mktemp("dcccl")
    artifact = run("dcccl", folder, out=folder / "out")
    reference = run("dcccl", folder / "reference", runtime="torch", baselines=False)
    return artifact, reference, folder


@pytest.fixture(scope="module")
def iciia_run(tmp_path_factory):
    return run("iciia", tmp_path_factory.mktemp("iciia"))


@pytest.fixture(scope="module")
def coda_run(tmp_path_factory):
    return run("coda", tmp_path_factory.mktemp("coda"))


# ---------------------------------------------------------------- what crosses the wire

def test_no_raw_sample_goes_up_in_dcccl(dcccl_runs):
    from dcx.methods.dcccl.simulation import device_samples

    (doc, wire), _, _ = dcccl_runs
    from dcx.methods import get_recipe

    cfg = get_recipe("dcccl", quick=True, num_devices=doc["devices"]).cfg
    devices = device_samples(cfg, doc["seed"])
    small_names = {f"S_k.{k}" for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                                        "fc1.bias", "fc2.weight", "fc2.bias")}
    ups = wire.up()
    assert len(ups) == doc["devices"] * doc["rounds_planned"]
    for k, message in ups:
        assert set(message.arrays) == small_names and set(message.metrics) == {"samples", "loss"}
        payload = message.encode()
        images, labels = devices[k].images.numpy(), devices[k].labels.numpy()
        assert not any(image.tobytes() in payload for image in images)  # no image, in any position
        for dtype in (np.int64, np.int32, np.uint8, np.float32):  # nor the label sequence, however encoded
            assert labels[:16].astype(dtype).tobytes() not in payload


def test_nothing_goes_up_in_iciia(iciia_run):
    doc, wire = iciia_run
    assert wire.up() == []
    assert doc["summary"]["bytes_up_total"] == 0
    assert all(r["bytes_up"] == 0 and r["devices_reported"] == doc["devices"] for r in doc["rounds"])
    program = [m for (d, r, k), ms in wire.messages.items() if d == "down" and r == 1 for m in ms]
    assert all("program.iciia.infer" in m.arrays for m in program)  # the module goes down once
    later = [m for (d, r, k), ms in wire.messages.items() if d == "down" and r > 1 for m in ms]
    assert later and all(not m.arrays for m in later)


def safetensors_size(tensors: dict[str, tuple[str, tuple[int, ...], int]], metadata: dict[str, str]) -> int:
    """The size of a safetensors file, from its format's spec: an 8-byte length, the JSON header (each tensor's
    dtype, shape and data offsets, packed in name order within one dtype) padded to 8 bytes, then the data."""
    header, offset = ({"__metadata__": metadata} if metadata else {}), 0
    for name in sorted(tensors):
        dtype, shape, nbytes = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"))
    return 8 + -(-len(text.encode()) // 8) * 8 + offset


def dcx_metadata(kind: str, metrics: dict[str, float]) -> dict[str, str]:
    """A dcx message's kind and metrics, as its protocol puts them in the safetensors metadata."""
    return {"dcx.kind": kind, "dcx.metrics": json.dumps(metrics)}


def test_bytes_are_the_safetensors_layout_of_the_parameters(dcccl_runs, iciia_run, coda_run):
    """Each counted size, computed here from the model's parameter shapes (4 bytes per float32 parameter) and the
    safetensors spec, not from the code's own count: DC-CCL's S_k up and S down, ICIIA's control message, CoDA's
    query."""
    from dcx.methods import get_recipe
    from dcx.methods.dcccl.recipe import make_small

    (doc, wire), _, _ = dcccl_runs
    cfg = get_recipe("dcccl", quick=True, num_devices=doc["devices"]).cfg
    shapes = {name: tuple(p.shape) for name, p in make_small(cfg, 0).named_parameters()}
    floats = sum(int(np.prod(shape)) for shape in shapes.values())
    assert floats > 5_000  # S's trainable parameters: what goes each way, 4 bytes each

    def s_message(prefix: str, kind: str, metrics: dict[str, float]) -> int:
        size = safetensors_size({prefix + n: ("F32", shape, 4 * int(np.prod(shape))) for n, shape in shapes.items()},
                                dcx_metadata(kind, metrics))
        assert 4 * floats < size < 4 * floats + 2_000
        return size

    for record in doc["rounds"]:
        for row in record["devices"]:
            (up,) = wire.messages[("up", record["round"], row["device"])]
            assert row["bytes_up"] == s_message("S_k.", "update", up.metrics)
            if record["round"] > 1:  # after the program went down, only S does
                assert row["bytes_down"] == s_message("S.", "train", {"round": float(record["round"])})
        assert record["bytes_up"] == sum(r["bytes_up"] for r in record["devices"])
        assert record["bytes_down"] == sum(r["bytes_down"] for r in record["devices"])
    assert doc["summary"]["bytes_up_total"] == sum(r["bytes_up"] for r in doc["rounds"])

    doc, _ = iciia_run
    control = {r: safetensors_size({}, dcx_metadata("stream", {"round": float(r)})) for r in range(2, 10)}
    assert all(row["bytes_down"] == control[record["round"]] for record in doc["rounds"][1:]
               for row in record["devices"])

    doc, _ = coda_run
    query = safetensors_size({"query": ("F32", (32,), 32 * 4)}, dcx_metadata("query", {}))
    assert [row["bytes_up"] for row in doc["rounds"][0]["devices"]] == [query] * doc["devices"]


def test_messages_round_trip_exactly():
    arrays = {"f": np.linspace(-1, 1, 7, dtype=np.float32), "i": np.arange(5, dtype=np.int32),
              "u": np.array([0, 255], np.uint8), "scalar": np.array(3.5, np.float32)}
    message = Message("update", arrays, {"samples": 400.0, "loss": 0.1 + 0.2})
    back = Message.decode(message.encode())
    assert back.kind == "update" and back.metrics == message.metrics
    assert all(np.array_equal(back.arrays[k], v) and back.arrays[k].dtype == v.dtype for k, v in arrays.items())
    assert len(Message("empty").encode()) < 100


# ---------------------------------------------------------------- the artifacts in the loop

def test_dcccl_executorch_agrees_with_the_eager_reference(dcccl_runs):
    """Round 1 starts every device from the same S: each S_k after its ~200 SGD steps in the .pte matches the eager
    program's; later rounds compound float noise through FedAvg, so the served accuracy is compared there."""
    (doc, wire), (ref, ref_wire), _ = dcccl_runs
    assert doc["device_runtime"] == "executorch" and ref["device_runtime"] == "torch"
    for k in range(doc["devices"]):
        (up,), (up_ref,) = wire.messages[("up", 1, k)], ref_wire.messages[("up", 1, k)]
        assert up.metrics["loss"] == pytest.approx(up_ref.metrics["loss"], rel=1e-4)
        for name, value in up.arrays.items():
            np.testing.assert_allclose(value, up_ref.arrays[name], atol=2e-3, rtol=0)
    for record, record_ref in zip(doc["rounds"], ref["rounds"]):
        assert abs(record["metrics"]["acc_dcccl"] - record_ref["metrics"]["acc_dcccl"]) < 0.01


def test_iciia_on_executorch_matches_the_eager_module(iciia_run):
    doc, _ = iciia_run
    s = doc["summary"]
    assert abs(s["acc_iciia"] - s["acc_iciia_p4"]) < 0.01  # the deployed P=4 module, artifact vs eager


def test_coda_eager_devices_are_the_recipes_functions(tmp_path):
    """On the eager runtime the device role is exactly the recipe's CoDA: the same AUCs as ``evaluate``."""
    from dcx.methods import get_recipe

    doc, _ = run("coda", tmp_path, runtime="torch", devices=5)
    recipe = get_recipe("coda", quick=True).evaluate(doc["seed"], users=5)
    s = doc["summary"]
    for mine, theirs in (("auc_global", "auc_global"), ("auc_local_only", "auc_local_only"),
                         ("auc_unfiltered", "auc_augmented_unfiltered"), ("auc_coda", "auc_coda")):
        assert s[mine] == pytest.approx(recipe[theirs], abs=1e-9)


# ---------------------------------------------------------------- the claims, in direction

def test_dcccl_controlled_fusion_beats_cloud_only_and_uncontrolled(dcccl_runs):
    s = dcccl_runs[0][0]["summary"]
    assert s["acc_dcccl"] > s["acc_cloud_only"] and s["acc_dcccl"] > s["acc_uncontrolled"]
    assert s["acc_dcccl"] > s["acc_device_only"]
    assert s["acc_central"] > s["acc_cloud_only"]
    assert 0 < s["gap_closed"] < 1.1


def test_iciia_gains_over_its_backbone(iciia_run):
    s = iciia_run[0]["summary"]
    assert s["acc_iciia"] > s["acc_backbone"] + 0.03
    assert all(s[f"acc_iciia_p{p}"] > s["acc_backbone"] for p in (1, 4, 16))


def test_coda_cloud_samples_counter_on_device_overfitting(coda_run):
    """The dilemma CoDA starts from reproduces on new users: a few local samples make on-device training overfit
    (local-only below the global model), and the cloud's retrieved samples lift it. That the classifier's
    filtering then beats both does not reproduce here; the README gives the full run's numbers."""
    doc, wire = coda_run
    s = doc["summary"]
    assert s["auc_local_only"] < s["auc_global"]
    assert s["auc_unfiltered"] > s["auc_local_only"]
    assert 0 < s["kept_per_device"] <= 0.5 * s["retrieved_per_device"]  # keep_fraction 0.5 of the candidates
    queries = [m for k, m in wire.up()]
    assert len(queries) == doc["devices"] and all(set(m.arrays) == {"query"} for m in queries)
    assert all(m.arrays["query"].dtype == np.float32 and m.arrays["query"].shape == (32,) for m in queries)


# ---------------------------------------------------------------- faults, engines, interrupts

def test_fault_plan_is_seeded_and_honours_its_rates():
    plan = FaultPlan(dropout=0.3, stragglers=0.2, seed=7)
    vanished = [plan.vanishes(r, 0, k) for r in range(1, 21) for k in range(100)]
    assert vanished == [FaultPlan(0.3, 0.2, 7).vanishes(r, 0, k) for r in range(1, 21) for k in range(100)]
    assert abs(np.mean(vanished) - 0.3) < 0.03
    speeds = np.array([plan.speed(k) for k in range(2000)])
    slow = speeds <= SLOW_SPEED[1]
    assert abs(slow.mean() - 0.2) < 0.03
    assert np.all(speeds[slow] >= SLOW_SPEED[0])
    assert np.all((speeds[~slow] >= NORMAL_SPEED[0]) & (speeds[~slow] <= NORMAL_SPEED[1]))
    assert not any(FaultPlan(seed=7).vanishes(1, 0, k) for k in range(100))
    assert all(FaultPlan(seed=7).speed(k) >= NORMAL_SPEED[0] for k in range(100))  # no slow device by default


def test_the_clock_holds_each_device_to_the_deadline():
    """Device 0 does 50 steps of 10 ms, device 1 150: at nominal speed 0.5 s and 1.5 s."""
    steps, nominal = {0: {"p": 50}, 1: {"p": 150}}, {0: 1.0, 1: 1.0}
    fixed = Clock({"p": 0.01}, deadline=1.0).close(steps, nominal, vanished=False)
    assert fixed.late == {1} and fixed.finished == pytest.approx({0: 0.5, 1: 1.5}) and fixed.duration == 1.0
    default = Clock({"p": 0.01}).close(steps, nominal, vanished=False)  # twice the longest nominal work: 3 s
    assert not default.late and default.deadline == pytest.approx(3.0) and default.duration == pytest.approx(1.5)
    slow = Clock({"p": 0.01}).close(steps, {0: 1 / 8, 1: 1.0}, vanished=False)  # 0.5 s of work at 1/8 speed: 4 s
    assert slow.late == {0} and slow.duration == pytest.approx(3.0)
    waited = Clock({"p": 0.01}).close(steps, nominal, vanished=True)  # a device that never replies: wait it out
    assert waited.duration == pytest.approx(3.0) and not waited.late


FAULTY = dict(devices=6, rounds=2, runtime="torch", dropout=0.3, stragglers=0.45, baselines=False)


@pytest.fixture(scope="module")
def faulty_runs(tmp_path_factory):
    """The same faulty DC-CCL run on both engines (eager device steps: the engines are under test)."""
    folder = tmp_path_factory.mktemp("engines")
    local = run("dcccl", folder / "local", engine="local", **FAULTY)
    flower = run("dcccl", folder / "flower", engine="flower", workers=2, **FAULTY)
    return local, flower


def test_rounds_complete_with_the_devices_that_reported(faulty_runs):
    (doc, wire), _ = faulty_runs
    plan = FaultPlan(FAULTY["dropout"], FAULTY["stragglers"], doc["seed"])
    step = doc["step_seconds"]["dcccl.train"]
    statuses = [row["status"] for r in doc["rounds"] for row in r["devices"]]
    assert VANISHED in statuses and LATE in statuses and REPORTED in statuses  # this seed exercises every path
    for record in doc["rounds"]:
        for row in record["devices"]:
            assert (row["status"] == VANISHED) == plan.vanishes(record["round"], 0, row["device"])
            assert (row["bytes_up"] > 0) == (row["status"] != VANISHED)  # late replies arrive and are counted
            if row["status"] != VANISHED:  # its steps at the measured step time, over its speed, against the deadline
                assert row["virtual_s"] == pytest.approx(row["steps"] * step / plan.speed(row["device"]), rel=1e-4)
                assert (row["status"] == LATE) == (row["virtual_s"] > record["deadline_s"])
        assert record["devices_reported"] == sum(row["status"] == REPORTED for row in record["devices"])
        assert record["devices_vanished"] + record["devices_late"] + record["devices_reported"] == 6
        assert record["virtual_s"] == record["deadline_s"] > 0  # someone vanished or was late: the cloud waited
    assert doc["complete"] and len(doc["rounds"]) == 2


def test_a_device_past_the_deadline_is_left_out_of_the_aggregate(faulty_runs):
    """The S sent down in round 2 is the FedAvg of the round-1 S_k that made the deadline, and not of all."""
    (doc, wire), _ = faulty_runs
    first = doc["rounds"][0]["devices"]
    on_time = [row["device"] for row in first if row["status"] == REPORTED]
    late = [row["device"] for row in first if row["status"] == LATE]
    assert on_time and late

    def fedavg(devices: list[int]) -> dict[str, np.ndarray]:
        ups = [wire.messages[("up", 1, k)][0] for k in devices]
        weights = np.array([m.metrics["samples"] for m in ups]) / sum(m.metrics["samples"] for m in ups)
        return {name[len("S_k."):]: sum(w * m.arrays[name] for w, m in zip(weights, ups)) for name in ups[0].arrays}

    (down,) = wire.messages[("down", 2, on_time[0])]
    sent = down.with_prefix("S.")
    expected, with_late = fedavg(on_time), fedavg(on_time + late)
    assert all(np.allclose(sent[n], expected[n], atol=1e-6) for n in expected)
    assert not all(np.allclose(sent[n], with_late[n], atol=1e-6) for n in expected)


def normalized(doc: dict) -> list[dict]:
    """A run's rounds without what is timed (wall clock, the step time measured in that run) or measured only on
    Flower."""
    timed = {"seconds", "virtual_s", "deadline_s", "flower_bytes_down", "flower_bytes_up"}
    return [{**{k: v for k, v in r.items() if k not in timed | {"devices"}},
             "devices": [{k: v for k, v in row.items() if k not in timed} for row in r["devices"]]}
            for r in doc["rounds"]]


def test_local_and_flower_engines_agree_at_the_same_seed(faulty_runs):
    (local, _), (flower, _) = faulty_runs
    assert flower["engine"] == "flower"
    assert normalized(flower) == normalized(local)
    timed = ("virtual_s_total", "flower_bytes_down_total", "flower_bytes_up_total")
    assert {k: v for k, v in flower["summary"].items() if k not in timed} == \
        {k: v for k, v in local["summary"].items() if k not in timed}
    assert not subprocess.run(["pgrep", "-f", "raylet"], capture_output=True).stdout  # Ray did not outlive the run


def test_flower_messages_are_measured_and_larger_by_their_envelope(faulty_runs):
    """What crossed between ServerApp and ClientApp, as Flower serializes it, is the dcx payload plus Flower's
    envelope: metadata, record and array names, SHA-256 object ids, a .npy header per array. Bounded here
    independently: at most 2 KB per message and 700 bytes plus the name per array."""
    (doc, _), (flower, wire) = faulty_runs
    assert "flower_bytes_down" not in doc["rounds"][0] and "flower_bytes_down_total" not in doc["summary"]

    def envelope_bound(messages: list[Message]) -> int:
        return sum(2_000 + sum(700 + len(name) for name in m.arrays) for m in messages)

    for record in flower["rounds"]:
        for row in record["devices"]:
            down = wire.messages[("down", record["round"], row["device"])]
            assert 0 < row["flower_bytes_down"] - row["bytes_down"] <= envelope_bound(down)
            if row["status"] == VANISHED:
                assert row["flower_bytes_up"] == 0  # its error reply stands for silence and is not counted
            else:
                up = wire.messages[("up", record["round"], row["device"])]
                assert 0 < row["flower_bytes_up"] - row["bytes_up"] <= envelope_bound(up)
        assert record["flower_bytes_down"] == sum(r["flower_bytes_down"] for r in record["devices"])
    assert flower["summary"]["flower_bytes_up_total"] == sum(r["flower_bytes_up"] for r in flower["rounds"])


def test_interrupt_after_round_one_keeps_it_on_disk(tmp_path):
    def progress(line: str) -> None:
        if line.startswith("[round 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate("dcccl", quick=True, runtime="torch", rounds=3, baselines=False, json_path=tmp_path / "run.json",
                 out=tmp_path / "out", progress=progress)
    for path in (tmp_path / "run.json", tmp_path / "out" / "dcccl.json"):
        doc = json.loads(path.read_text())
        assert not doc["complete"] and [r["round"] for r in doc["rounds"]] == [1]
        assert doc["summary"]["rounds_completed"] == 1
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))  # no temporary file left behind


CLI = ("import sys; from dcx.cli import cli, main; from dcx.simulate.cli import simulate_cmd\n"
       "cli.add_command(simulate_cmd); sys.argv = ['dcx', *sys.argv[1:]]; main()")


def dcx(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=600, **kwargs)


def test_ctrl_c_on_the_command_line_keeps_finished_rounds(tmp_path):
    out = tmp_path / "run.json"
    # Ctrl-C's default action even where the test runner was started with SIGINT ignored (a background job)
    proc = subprocess.Popen([sys.executable, "-c", CLI, "simulate", "dcccl", "--quick", "--device-runtime", "torch",
                             "--rounds", "5", "--json", str(out)], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stderr:
        if line.startswith("[round 1/5]"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "interrupted" in rest
    doc = json.loads(out.read_text())
    assert not doc["complete"] and 1 <= len(doc["rounds"]) < 5


# ---------------------------------------------------------------- the report

def test_out_holds_the_json_table_and_plots(dcccl_runs, tmp_path):
    from dcx.stamp import read_stamp

    (doc, _), _, folder = dcccl_runs
    out = folder / "out"
    written = json.loads((out / "dcccl.json").read_text())
    assert written["summary"] == doc["summary"]
    table = (out / "dcccl.md").read_text()
    assert "acc_dcccl" in table and f"{doc['rounds'][-1]['bytes_up']:,}" in table
    assert "missed deadline" in table and "virtual round s" in table
    stamp = written["stamp"]  # what measured it: the checkout, the machine, one thread
    assert read_stamp(table) == (stamp["commit"], stamp["dirty"]) and stamp["threads"] == 1
    assert len(stamp["commit"]) == 40 and stamp["versions"]["torch"]
    for name in ("dcccl_metric.png", "dcccl_bytes.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from dcx.readme import SECTIONS, sync
    from dcx.simulate.report import write_results

    results = write_results([doc], out, "dcx simulate all")
    assert "acc_dcccl" in results.read_text() and "dcccl_metric.png" in results.read_text()
    assert read_stamp(results.read_text()) == (stamp["commit"], stamp["dirty"])
    root = tmp_path / "repo"  # `dcx readme` copies the results into the README's simulate section
    (root / "benchmarks" / "simulate").mkdir(parents=True)
    (root / "benchmarks" / "simulate" / "README.md").write_text(results.read_text())
    readme = root / "README.md"
    others = {n: rel for n, rel in SECTIONS.items() if n != "simulate"}
    readme.write_text("# title\n\n<!-- dcx:simulate -->\nold\n<!-- /dcx:simulate -->\n\nafter\n" + "".join(
        f"<!-- dcx:{n} -->\n<!-- /dcx:{n} -->\n" for n in others))
    assert "simulate" in sync(readme, root, check=True)
    sync(readme, root)
    text = readme.read_text()
    assert "old" not in text and "after" in text and "acc_dcccl" in text and sync(readme, root, check=True) == [
        f"{n} ({rel} not written yet: run the command that writes it)" for n, rel in others.items()]
    readme.write_text("no markers\n")
    with pytest.raises(DcxError, match="no section <!-- dcx:"):
        sync(readme, root)


def test_device_samples_are_the_recipes(dcccl_runs):
    from dcx.methods.dcccl.recipe import make_scenario
    from dcx.methods.dcccl.simulation import device_samples

    doc = dcccl_runs[0][0]
    from dcx.methods import get_recipe

    cfg = get_recipe("dcccl", quick=True, num_devices=doc["devices"]).cfg
    for mine, recipes in zip(device_samples(cfg, doc["seed"]), make_scenario(cfg, doc["seed"]).devices):
        assert np.array_equal(mine.labels.numpy(), recipes.labels.numpy())
        assert np.array_equal(mine.images.numpy(), recipes.images.numpy())


# ---------------------------------------------------------------- bad input: one line each

@pytest.mark.parametrize("kwargs, needle", [
    (dict(method="dcccl", devices=60_000), "--devices 60000"),
    (dict(method="iciia", devices=10_001), "--devices 10001"),
    (dict(method="coda", devices=201), "--devices 201"),
    (dict(method="fedprox"), "unknown method 'fedprox'"),
    (dict(method="dcccl", engine="spark"), "--engine spark"),
    (dict(method="dcccl", runtime="coreml"), "--device-runtime coreml"),
    (dict(method="dcccl", dropout=1.0), "--dropout 1.0"),
    (dict(method="dcccl", stragglers=1.5), "--stragglers 1.5"),
    (dict(method="dcccl", deadline=0.0), "--deadline 0.0"),
    (dict(method="dcccl", deadline=float("nan")), "--deadline nan"),
    (dict(method="dcccl", rounds=0), "--rounds 0"),
    (dict(method="dcccl", checkpoint="/nonexistent/ckpt"), "/nonexistent/ckpt"),
])
def test_bad_input_is_one_line(kwargs, needle):
    with pytest.raises(DcxError) as e:
        simulate(kwargs.pop("method"), quick=True, **kwargs, **QUIET)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_device_without_its_program_is_one_line(tmp_path):
    from dcx.methods import get_recipe
    from dcx.methods.dcccl.simulation import Device
    from dcx.simulate.roles import DeviceSpec

    spec = DeviceSpec("dcccl", get_recipe("dcccl", quick=True).cfg, 0, 3, 1, "executorch", str(tmp_path))
    with pytest.raises(DcxError, match="no program dcccl.train") as e:
        Device(spec).handle(0, 1, Message("train"), Message("state"))
    assert "\n" not in str(e.value)


def test_ray_failing_to_start_is_one_line(monkeypatch):
    from dcx.simulate.engines.flower import _start_ray

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # no Ray cluster there
    with pytest.raises(DcxError, match="Ray failed to start") as e:
        _start_ray(1)
    assert "\n" not in str(e.value) and "--engine local" in str(e.value)


def test_command_line_errors_are_one_line_on_stderr(tmp_path):
    r = dcx("simulate", "dcccl", "--engine", "spark")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--engine spark" in r.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    r = dcx("simulate", "iciia", "--quick", "--out", str(tmp_path / "full"))
    assert r.returncode == 2 and "--force" in r.stderr and r.stderr.strip().count("\n") == 0
    r = dcx("simulate", "all", "--devices", "3")
    assert r.returncode == 2 and "need one method" in r.stderr
