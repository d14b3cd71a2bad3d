import pytest

from dcx.bench.runtimes import bench_runtimes, fast_training_targets, format_rows


def test_bench_runtimes_measures_every_training_runtime_side_by_side():
    rows = bench_runtimes("dcccl", rounds=2, warmup=1)
    steps = {r["runtime"]: r for r in rows if r["measure"] == "train_step"}
    assert set(steps) == {"eager", "executorch", "executorch-fast", "tflite"}
    assert steps["eager"]["ratio_to_eager"] == 1.0
    assert all(r["program"] == "dcccl.train" and 0 < r["best_step_s"] <= r["median_step_s"] for r in steps.values())
    exports = {r["runtime"]: r["export_s"] for r in rows if r["measure"] == "export"}
    assert set(exports) == {"executorch", "executorch-fast", "tflite", "coreml", "onnx"}
    assert all(t > 0 for t in exports.values())
    (target,) = fast_training_targets(rows)  # ratios computed from this run's medians, not asserted on
    assert target["program"] == "dcccl.train" and target["x_vs_eager"] > 0 and "targets" in format_rows(rows)


def _steps(median: dict[str, float], best: dict[str, float] | None) -> list[dict]:
    return [{"measure": "train_step", "program": "p.train", "runtime": k, "median_step_s": m,
             "ratio_to_eager": m / median["eager"], **({"best_step_s": best[k]} if best else {})}
            for k, m in median.items()]


MEDIANS = {"eager": 0.147, "executorch": 7.0, "tflite": 0.32, "executorch-fast": 0.057}


@pytest.mark.parametrize("best,met", [
    ({"eager": 0.085, "executorch": 6.9, "tflite": 0.30, "executorch-fast": 0.052}, False),  # eager slow in most rounds only
    ({"eager": 0.120, "executorch": 6.9, "tflite": 0.30, "executorch-fast": 0.055}, True),
    (None, True),  # a run without best rounds: the medians alone
])
def test_targets_hold_for_the_medians_and_the_best_rounds(best, met):
    (t,) = fast_training_targets(_steps(MEDIANS, best))
    assert t["x_vs_eager"] == pytest.approx(0.147 / 0.057) and t["meets_targets"] is met
    assert ("x_vs_eager_best" in t) is (best is not None)
    assert ("targets met" if met else "targets NOT met") in format_rows(_steps(MEDIANS, best))
