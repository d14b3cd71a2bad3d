from dcx.bench.runtimes import bench_runtimes, fast_training_targets, format_rows


def test_bench_runtimes_measures_every_training_runtime_side_by_side():
    rows = bench_runtimes("dcccl", rounds=2, warmup=1)
    steps = {r["runtime"]: r for r in rows if r["measure"] == "train_step"}
    assert set(steps) == {"eager", "executorch", "executorch-fast", "tflite"}
    assert steps["eager"]["ratio_to_eager"] == 1.0
    assert all(r["program"] == "dcccl.train" and r["median_step_s"] > 0 for r in steps.values())
    exports = {r["runtime"]: r["export_s"] for r in rows if r["measure"] == "export"}
    assert set(exports) == {"executorch", "executorch-fast", "tflite", "coreml", "onnx"}
    assert all(t > 0 for t in exports.values())
    (target,) = fast_training_targets(rows)  # ratios computed from this run's medians, not asserted on
    assert target["program"] == "dcccl.train" and target["x_vs_eager"] > 0 and "targets" in format_rows(rows)
