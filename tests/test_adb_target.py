"""The adb target against the real adb client (Debian's 29.0.6) and emulated phones (tests/adb_device).

No phone is needed: each ``EmulatedPhone`` speaks the device side of the adb
protocol on 127.0.0.1 and runs aarch64 programs under qemu-aarch64. The adb
server is private to this module (its own port and HOME) and killed at the end.
Until the real runner is in the bundle, the bundle holds a stand-in runner
cross-compiled here (tests/adb_device/stand_in_runner.c), assembled by
android_harness/bundle.py with the cross toolchain's glibc loader and libc;
``run_artifact``, what ``dcx profile`` calls, drives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from adb_device import EmulatedPhone, PhoneConfig, build_exec_shim
from dcx.android.adb import AdbTarget, device_quote
from dcx.android.bundle import assemble
from dcx.backends.tflite.benchmark_model import benchmark_tflite, parse_benchmark_output
from dcx.errors import DcxError
from dcx.targets import RunRequest
from dcx.targets.runner import OUTPUTS, run_artifact

HERE = Path(__file__).resolve().parent / "adb_device"
CROSS_LIB = Path("/usr/aarch64-linux-gnu/lib")
# Each would leave a file named "pwned" behind if a shell ever read it unquoted.
HOSTILE_NAMES = ["it's a \"model\".pte", "$(touch pwned) `touch pwned`; touch pwned #.pte", "-rf.pte",
                 "new\nline.pte", "back\\slash&*?[a].pte", "comma,0755.pte"]


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: apt-get install {package}"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory):
    """A private adb server: its own port and HOME (so its key pair), killed when the module ends."""
    adb = tool("adb", "adb")
    home = tmp_path_factory.mktemp("adb_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANDROID_ADB_SERVER_PORT", str(free_port()))
        mp.setenv("HOME", str(home))
        mp.delenv("ANDROID_SERIAL", raising=False)
        mp.delenv("ADB_VENDOR_KEYS", raising=False)
        subprocess.run([adb, "start-server"], check=True, capture_output=True, timeout=30)
        try:
            yield (home / ".android" / "adbkey.pub").read_text()
        finally:
            subprocess.run([adb, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory):
    """The execve shim, the stand-in runner's bundle and the stand-in benchmark_model, built once."""
    tool("qemu-aarch64", "qemu-user")
    gcc = tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
    out = tmp_path_factory.mktemp("adb_toolchain")
    runner = out / "dcx_runner"
    subprocess.run([gcc, "-O1", "-o", str(runner), str(HERE / "stand_in_runner.c")], check=True)
    assemble(runner, out / "bundle", [CROSS_LIB])
    benchmark = out / "benchmark_model_stand_in"
    subprocess.run([gcc, "-O1", "-static", "-o", str(benchmark), str(HERE / "stand_in_benchmark_model.c"), "-lm"],
                   check=True)
    return {"shim": build_exec_shim(out), "bundle": out / "bundle", "benchmark": benchmark}


@pytest.fixture
def phones(adb_server, toolchain, tmp_path_factory):
    """Start emulated phones and `adb connect` them; disconnect and unplug them after the test."""
    started: list[EmulatedPhone] = []

    def start(**config) -> EmulatedPhone:
        config.setdefault("trusted_keys", [adb_server])
        phone = EmulatedPhone(tmp_path_factory.mktemp("phone"), PhoneConfig(**config), toolchain["shim"],
                              shutil.which("qemu-aarch64"))
        started.append(phone)
        out = subprocess.run(["adb", "connect", phone.address], capture_output=True, text=True, timeout=30).stdout
        assert phone.address in out, out
        return phone

    yield start
    for phone in started:
        subprocess.run(["adb", "disconnect", phone.address], capture_output=True, timeout=30)
        phone.unplug()


def model_file(folder: Path, name: str = "model.pte", first_word: str = "") -> tuple[Path, bytes]:
    """A model for the stand-in runner: its first word picks what the runner does (none: a normal run)."""
    data = first_word.encode() + b"\0" + os.urandom(70_000)  # more than one 64 KiB sync chunk
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path, data


def run_folders(phone: EmulatedPhone) -> list[Path]:
    return sorted((phone.sandbox / "dcx").glob("run-*"))


def assert_one_line(error: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


# --- quoting ----------------------------------------------------------------------------------


def test_device_quote_passes_hostile_words_verbatim_to_a_posix_shell(tmp_path):
    # The host's sh stands in for the phone's here; the tests below go through the emulated phone.
    words = [*HOSTILE_NAMES, "", "'", "''", "a'b'c", "\\'", "%d $HOME"]
    line = "printf '%s\\0' " + " ".join(device_quote(w) for w in words)
    out = subprocess.run(["/bin/sh", "-c", line], capture_output=True, check=True, cwd=tmp_path).stdout
    assert out.split(b"\0")[:-1] == [w.encode() for w in words]
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(DcxError, match="NUL"):
        device_quote("a\0b")


# --- runs -------------------------------------------------------------------------------------


def test_run_artifact_on_the_phone_with_hostile_names(phones, toolchain, tmp_path):
    phone = phones()
    target = AdbTarget(None, bundle=toolchain["bundle"])
    assert (target.name, target.emulated) == (f"adb:{phone.address}", False)
    for i, name in enumerate(HOSTILE_NAMES):
        model, data = model_file(tmp_path / "models", name)
        out = tmp_path / f"out{i}"
        run = run_artifact(target, model, None, out)
        assert run.result["runner"] == "stand-in" and run.result["model_bytes"] == len(data)
        assert run.result["argv"][:2] == ["--model", name]
        assert run.outputs["output/reversed"].tobytes() == data[::-1]
        assert sorted(p.name for p in out.iterdir()) == [OUTPUTS]  # no partial files; the absent ETDump skipped
        assert run_folders(phone) == []
    assert list(phone.sandbox.rglob("pwned")) == []


def test_run_request_arguments_arrive_verbatim(phones, toolchain, tmp_path):
    phone = phones()
    target = AdbTarget(phone.address, bundle=toolchain["bundle"])
    model, data = model_file(tmp_path)
    args = ["--model", "model.pte", "--outputs", "out.st", "", "'", "--flag=$HOME", "a b\tc", "$(touch pwned)"]
    result = target.run(RunRequest(args, {"model.pte": model}, ["out.st", "absent.txt"]), tmp_path)
    assert json.loads(result.stdout)["argv"] == args
    assert (result.returncode, set(result.pulled)) == (0, {"out.st"})
    assert (tmp_path / "out.st").read_bytes().endswith(data[::-1])
    assert list(phone.sandbox.rglob("pwned")) == []


def test_bundle_is_pushed_once_per_content(phones, toolchain, tmp_path):
    phone = phones()
    model, _ = model_file(tmp_path)
    target = AdbTarget(phone.address, bundle=toolchain["bundle"])
    run_artifact(target, model, None, tmp_path)
    [pushed] = (phone.sandbox / "dcx").glob("bundle-*")
    (pushed / "left-by-first-push").write_text("x")
    run_artifact(target, model, None, tmp_path)
    assert (pushed / "left-by-first-push").exists()  # the second run reused the bundle

    changed = tmp_path / "changed"
    runner = changed / "dcx_runner"
    changed.mkdir()
    shutil.copy(toolchain["bundle"] / "dcx_runner", runner)
    with open(runner, "ab") as f:
        f.write(b"another build")
    assemble(runner, changed / "bundle", [CROSS_LIB])
    run = run_artifact(AdbTarget(phone.address, bundle=changed / "bundle"), model, None, tmp_path)
    assert run.result["runner"] == "stand-in"
    [replaced] = (phone.sandbox / "dcx").glob("bundle-*")
    assert replaced != pushed and (replaced / "dcx_runner").read_bytes().endswith(b"another build")


def test_a_timed_out_run_is_stopped_and_cleaned_up(phones, toolchain, tmp_path):
    phone = phones()
    model, _ = model_file(tmp_path, first_word="slow")
    target = AdbTarget(phone.address, bundle=toolchain["bundle"])
    with pytest.raises(DcxError) as error:
        run_artifact(target, model, None, tmp_path, timeout_s=0.5)
    assert_one_line(error, target.name, "did not finish")
    assert run_folders(phone) == []


# --- faults -----------------------------------------------------------------------------------


def test_unauthorized_phone(phones, toolchain):
    phone = phones(trusted_keys=[])
    with pytest.raises(DcxError) as error:
        AdbTarget(phone.address, bundle=toolchain["bundle"])
    assert_one_line(error, f"adb:{phone.address}", "Allow USB debugging")
    assert phone.offered_keys, "the server offered its public key for the user to accept"


def test_unplugged_mid_run_keeps_the_results_so_far(phones, toolchain, tmp_path):
    phone = phones(unplug_on="slow.pte")
    target = AdbTarget(phone.address, bundle=toolchain["bundle"])
    model, data = model_file(tmp_path)
    first = run_artifact(target, model, None, tmp_path / "first")
    slow, _ = model_file(tmp_path, "slow.pte", first_word="slow")
    with pytest.raises(DcxError) as error:
        run_artifact(target, slow, None, tmp_path / "second")
    assert_one_line(error, f"lost {target.name} while running dcx_runner", "reconnect")
    assert (tmp_path / "first" / OUTPUTS).is_file() and first.outputs["output/reversed"].tobytes() == data[::-1]


def test_too_little_free_space_is_refused_before_pushing(phones, toolchain, tmp_path):
    phone = phones(df_available_bytes=4 << 20)
    target = AdbTarget(phone.address, bundle=toolchain["bundle"])
    with pytest.raises(DcxError) as error:
        run_artifact(target, model_file(tmp_path)[0], None, tmp_path)
    assert_one_line(error, target.name, "MB free in /data/local/tmp", "free space on the phone")
    assert not (phone.sandbox / "dcx").exists()


def test_disk_filling_up_during_the_push(phones, toolchain, tmp_path):
    phone = phones(writable_bytes=300_000)  # df says 8 GB free, the disk holds 300 kB
    target = AdbTarget(phone.address, bundle=toolchain["bundle"])
    with pytest.raises(DcxError) as error:
        run_artifact(target, model_file(tmp_path)[0], None, tmp_path)
    assert_one_line(error, target.name, "ran out of space", "free space on the phone")
    assert run_folders(phone) == []


@pytest.mark.parametrize("word, returncode, message", [("crash", -signal.SIGSEGV, ""),
                                                       ("fail", 3, "not an ExecuTorch program"),
                                                       ("garbage", 0, "printed no JSON")])
def test_runner_failures_reach_the_caller(phones, toolchain, tmp_path, word, returncode, message):
    phone = phones()
    target = AdbTarget(phone.address, bundle=toolchain["bundle"])
    model, _ = model_file(tmp_path, first_word=word)
    result = target.run(RunRequest(["--model", "model.pte"], {"model.pte": model}), tmp_path)
    assert result.returncode == returncode  # as the host and qemu targets report it: a signal is negative
    with pytest.raises(DcxError) as error:
        run_artifact(target, model, None, tmp_path)
    assert_one_line(error, target.name, message)
    assert run_folders(phone) == []


def test_two_phones_need_a_serial(phones, toolchain):
    first, second = phones(), phones()
    with pytest.raises(DcxError) as error:
        AdbTarget(None, bundle=toolchain["bundle"])
    assert_one_line(error, "2 phones", first.address, second.address, "--target adb:SERIAL")
    assert AdbTarget(second.address, bundle=toolchain["bundle"]).name == f"adb:{second.address}"


def test_unknown_serial(phones, toolchain):
    phone = phones()
    with pytest.raises(DcxError) as error:
        AdbTarget("R58M123ABC", bundle=toolchain["bundle"])
    assert_one_line(error, "adb:R58M123ABC", phone.address)


def test_x86_phone_is_refused(phones, toolchain):
    props = dict(PhoneConfig().props, **{"ro.product.cpu.abi": "x86_64"})
    phone = phones(props=props)
    with pytest.raises(DcxError) as error:
        AdbTarget(phone.address, bundle=toolchain["bundle"])
    assert_one_line(error, f"adb:{phone.address} reports ABI x86_64", "arm64-v8a")


def test_missing_adb_client(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DcxError) as error:
        AdbTarget(None)
    assert_one_line(error, "apt-get install adb")


def test_missing_bundle(phones, tmp_path):
    phone = phones()
    target = AdbTarget(phone.address, bundle=tmp_path / "no-bundle")
    with pytest.raises(DcxError) as error:
        run_artifact(target, model_file(tmp_path)[0], None, tmp_path)
    assert_one_line(error, str(tmp_path / "no-bundle"), "runtimes/native/build.sh")


def test_phone_without_shell_v2(phones, toolchain, tmp_path):
    """An old adbd: no shell protocol, so no exit status and stderr mixed into stdout; the exit mark still tells."""
    phone = phones(features=("stat_v2", "fixed_push_mkdir"))
    target = AdbTarget(phone.address, bundle=toolchain["bundle"])
    model, data = model_file(tmp_path)
    assert run_artifact(target, model, None, tmp_path).result["model_bytes"] == len(data)
    failing, _ = model_file(tmp_path, "failing.pte", first_word="fail")
    result = target.run(RunRequest(["--model", "failing.pte"], {"failing.pte": failing}), tmp_path)
    assert result.returncode == 3 and result.stdout.strip().endswith("not an ExecuTorch program")


# --- LiteRT benchmark_model -----------------------------------------------------------------

# Written from the documented line formats of LiteRT's benchmark_model (a parser test, not a run).
BENCHMARK_LOG = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [20]
INFO: Num threads: [1]
INFO: Graph: [model.tflite]
INFO: #threads used for CPU inference: [1]
INFO: Loaded model model.tflite
INFO: The input model file size (MB): 3.48
INFO: Initialized session in 41.25ms.
INFO: Running benchmark for at least 3 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=3 first=15120 curr=12010 min=12010 max=15120 avg=13100.5 std=1400

INFO: Running benchmark for at least 20 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=83 first=11950 curr=12004 min=11800 max=13020 avg=12031.7 std=210 p5=11850 median=12001 p95=12600

INFO: Inference timings in us: Init: 41250, First inference: 15120, Warmup (avg): 13100.5, Inference (avg): 12031.7
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the \
actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.25 overall=9.5
INFO: Overall peak memory footprint (MB) via periodic monitoring: 21.75
"""


def test_benchmark_log_parser():
    row = parse_benchmark_output(BENCHMARK_LOG, "benchmark_model on adb:X")
    assert row["load_ms"] == 41.25 and row["first_ms"] == 15.12
    assert (row["warmup"], row["iterations"]) == (3, 83)  # counts as run, not as asked
    assert row["latency_ms"] == {"mean": 12.0317, "trimmed_mean": None, "p50": 12.001, "p90": None,
                                 "min": 11.8, "max": 13.02}
    assert (row["init_rss_delta_kb"], row["peak_rss_delta_kb"], row["peak_rss_kb"]) == (6400, 9728, 22272)
    older = BENCHMARK_LOG.replace(" p5=11850 median=12001 p95=12600", "").rsplit("INFO: Overall", 1)[0]
    row = parse_benchmark_output(older, "benchmark_model on adb:X")
    assert row["latency_ms"]["p50"] is None and row["peak_rss_kb"] is None and row["peak_rss_delta_kb"] == 9728
    with pytest.raises(DcxError) as error:
        parse_benchmark_output(BENCHMARK_LOG.replace("Inference timings", "Timings"), "benchmark_model on adb:X")
    assert_one_line(error, "benchmark_model on adb:X", "Inference timings in us:")


def test_benchmark_model_stand_in_on_the_phone_keeps_rows_before_garbage(phones, toolchain, tmp_path):
    phone = phones()
    target = AdbTarget(phone.address, bundle=toolchain["bundle"])
    model, garbage = tmp_path / "tiny.tflite", tmp_path / "wrong.tflite"
    model.write_bytes(os.urandom(4096))
    garbage.write_bytes(b"garbage" + os.urandom(100))
    rows = []
    with pytest.raises(DcxError) as error:
        for row in benchmark_tflite(target, toolchain["benchmark"], [model, garbage], num_runs=7, warmup_runs=2,
                                    local_dir=tmp_path):
            rows.append(row)
    assert_one_line(error, f"benchmark_model_stand_in on {target.name}", "printed no")
    [row] = rows
    assert (row["model"], row["target"], row["runner"]) == (str(model), target.name, "benchmark_model")
    assert (row["warmup"], row["iterations"]) == (2, 7)
    latency = row["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["max"]
    assert latency["min"] <= latency["mean"] <= latency["max"]
    assert row["load_ms"] > 0 and row["first_ms"] > 0 and row["peak_rss_kb"] > 0
    assert run_folders(phone) == []


def test_benchmark_binary_must_be_aarch64(tmp_path):
    script = tmp_path / "benchmark_model"
    script.write_text("#!/bin/sh\necho not a LiteRT build\n")
    with pytest.raises(DcxError) as error:
        next(benchmark_tflite(None, script, [], num_runs=1, warmup_runs=1, local_dir=tmp_path))
    assert_one_line(error, f"--tflite-benchmark {script}", "arm64 Android build")


# ---------------------------------------------------------------- dcx profile over adb, with the real runner bundle

@pytest.fixture(scope="module")
def dcccl_export(tmp_path_factory) -> Path:
    """The real DC-CCL programs, exported to ExecuTorch (what the runner runs) and TFLite."""
    from dcx.api import export_programs
    from dcx.methods import get_recipe

    out = tmp_path_factory.mktemp("dcccl_export")
    summary = export_programs(get_recipe("dcccl").device_programs(0), out, ["executorch", "tflite"])
    assert not summary.failed, summary.failed
    return out


def dcx_profile(*args: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-c", "from dcx.cli import main; main()", "profile", *args],
                          capture_output=True, text=True, timeout=900)


def test_dcx_profile_over_adb_end_to_end(phones, dcccl_export, tmp_path):
    """The real aarch64 bundle pushed to an emulated phone and run through its shell, as on a real phone."""
    phone = phones()
    r = dcx_profile(str(dcccl_export), "--target", f"adb:{phone.address}", "--iterations", "3", "--warmup", "1",
                    "--json", str(tmp_path / "rows.json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "rows.json").read_text())
    measured = [row for row in rows if row["format"] == "executorch"]
    assert {row["program"] for row in measured} == {"dcccl.train", "dcccl.infer"}
    for row in measured:
        assert row["target"] == f"adb:{phone.address}" and not row["emulated"] and row["runtime"] == "dcx_runner"
        assert row["outputs_match"] and row["load_ms"] > 0 and row["latency_ms"]["p50"] > 0
    assert next(row for row in measured if row["kind"] == "train")["losses"]
    assert all(row["skipped"] and "--tflite-benchmark" in row["skipped"] for row in rows if row["format"] == "tflite")
    assert run_folders(phone) == []  # every per-run folder was removed from the phone


def test_dcx_profile_keeps_the_rows_measured_before_the_phone_was_lost(phones, dcccl_export, tmp_path):
    phone = phones(unplug_on="dcccl.infer")  # the first program (dcccl.train) runs; the phone goes at the second
    r = dcx_profile(str(dcccl_export), "--target", f"adb:{phone.address}", "--iterations", "2",
                    "--json", str(tmp_path / "rows.json"))
    error = r.stderr.strip().splitlines()[-1]  # after the progress lines: one line naming the phone and the fix
    assert r.returncode == 2 and "Traceback" not in r.stderr and error.startswith("dcx: error: lost "), r.stderr
    assert phone.address in error and "reconnect" in error
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(row["program"], row["format"]) for row in rows if not row["skipped"]] == [("dcccl.train", "executorch")]
