"""Per-format spec tools shared by exporters and runtimes (neither imports the other).

- ``formats.coreml``: loading and describing Core ML specs, Core ML's updatable-model rules, a reference
  interpreter of the NeuralNetwork layers dcx emits, and the app-side training driver on it.
- ``formats.tflite``: reading a ``.tflite`` flatbuffer's operators.
"""
