"""Benchmarks: candidates measured side by side in one run, single-threaded, reported as ratios.

- ``runtimes``: one on-device training step per runtime (eager, stock ExecuTorch, LiteRT with and without
  XNNPACK, MNN's trainer in ``mnn``, dcx's fast ExecuTorch), checked against eager, and the targets judged.
- ``native``: the native runner against ExecuTorch's Python pybindings, per inference artifact.
- ``device``: the CI emulator benchmark: programs of every recipe profiled under qemu-aarch64, checked against
  the host.
- ``kernels``: the fused partitioned linear against PyTorch formulations of it.
- ``training``: what the dcx training kernels buy each training program, and every dcx op at its shapes.
The kernels' native benchmarks live beside them in ``kernels/``.
"""
