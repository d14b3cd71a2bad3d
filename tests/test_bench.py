from dcx.bench import bench_runtimes, format_rows


def test_bench_runtimes_measures_every_training_runtime_side_by_side():
    rows = bench_runtimes("dcccl", rounds=2, warmup=1)
    steps = {r["runtime"]: r for r in rows if r["measure"] == "train_step"}
    assert set(steps) == {"eager", "executorch", "tflite"}
    assert steps["eager"]["ratio_to_eager"] == 1.0
    assert all(r["program"] == "dcccl.train" and r["median_step_s"] > 0 for r in steps.values())
    exports = {r["runtime"]: r["export_s"] for r in rows if r["measure"] == "export"}
    assert set(exports) == {"executorch", "tflite", "coreml", "onnx"} and all(t > 0 for t in exports.values())
    assert "dcccl.train" in format_rows(rows)
