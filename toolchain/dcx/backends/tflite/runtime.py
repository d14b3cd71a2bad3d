"""LiteRT (ai-edge-litert) host runtime for ``.tflite`` artifacts: run, train, read and write weights.

A training artifact has the signatures ``train`` (one optimizer step inside the
model, returns the loss before the update), ``infer``, ``save`` (weights out
as tensors), ``restore`` (weights in) and, where there is any, ``state`` (the
program's and the optimizer's state out); an inference artifact has ``infer``.
All signatures of one interpreter share the model's resource variables, so a
session keeps its trained state between calls, as the app does on the phone.

Needs only ``ai-edge-litert`` (no TensorFlow).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np

from dcx.errors import DcxError
from dcx.manifest import ManifestEntry
from dcx.backends.runtime import Check

TRAIN_SIGNATURES = ("infer", "train", "save", "restore")


def _interpreter(path: Path | None = None, content: bytes | None = None, num_threads: int = 1,
                 xnnpack: bool = False):
    """A LiteRT interpreter; by default the reference builtin kernels (no XNNPACK), single-threaded.

    XNNPACK reorders float reductions, which is fine for serving but makes
    step-for-step parity with PyTorch noisier; pass ``xnnpack=True`` to get
    the phone's default CPU path.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    kwargs = {"model_path": str(path)} if path is not None else {"model_content": content}
    return Interpreter(**kwargs, num_threads=num_threads, experimental_op_resolver_type=resolver)


class TFLiteSession:
    """One LiteRT interpreter over an artifact, with a runner per signature."""

    def __init__(self, path: Path, entry: ManifestEntry, num_threads: int = 1, xnnpack: bool = False):
        self.path, self.entry = Path(path), entry
        if not self.path.is_file():
            raise DcxError(f"{self.path}: no such .tflite file; run `dcx export --format tflite` first")
        try:
            self.interpreter = _interpreter(self.path, num_threads=num_threads, xnnpack=xnnpack)
        except (ValueError, RuntimeError) as e:
            raise DcxError(f"{self.path}: LiteRT cannot load this model ({e}); re-export it") from None
        self.signatures = entry.signatures
        available = self.interpreter.get_signature_list()
        for name in self.signatures:
            if name not in available:
                raise DcxError(f"{self.path}: manifest field 'signatures' names {name!r}, which the model lacks "
                               f"(it has {', '.join(available)}); re-export the artifact")
        self.runners = {name: self.interpreter.get_signature_runner(name) for name in available}
        self.weight_names = dict(entry.weights)  # PyTorch name -> name inside the artifact

    # ------------------------------------------------------------ calls

    def _call(self, signature: str, arrays: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        if signature not in self.runners:
            raise DcxError(f"{self.path}: the model has no {signature!r} signature "
                           f"(an {self.entry.kind} artifact); export a training program")
        sig = self.signatures.get(signature)
        if sig is None:
            raise DcxError(f"{self.path}: manifest field 'signatures' lacks {signature!r}; re-export the artifact")
        specs = sig.inputs
        if len(arrays) != len(specs):
            names = ", ".join(s.name for s in specs)
            raise DcxError(f"{self.path}: signature {signature!r} takes {len(specs)} inputs ({names}), "
                           f"got {len(arrays)}")
        feed = {}
        for spec, a in zip(specs, arrays):
            a = np.asarray(a)
            if list(a.shape) != list(spec.shape):
                raise DcxError(f"{self.path}: input {spec.name!r} of {signature!r} must have shape "
                               f"{list(spec.shape)}, got {list(a.shape)}")
            feed[spec.name] = np.ascontiguousarray(a, dtype=np.dtype(spec.dtype))
        return self.runners[signature](**feed)

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        out = self._call("infer", inputs)
        return [np.array(out[s.name]) for s in self.signatures["infer"].outputs]

    def train_step(self, *inputs_and_targets: np.ndarray) -> float:
        out = self._call("train", inputs_and_targets)
        (loss,) = out.values()
        return float(loss)

    def get_weights(self) -> dict[str, np.ndarray]:
        out = self._call("save", ())
        return {torch_name: np.array(out[inner]) for torch_name, inner in self.weight_names.items()}

    def _state(self) -> dict[str, np.ndarray]:
        return {n: np.array(v) for n, v in self._call("state", ()).items()} if "state" in self.signatures else {}

    def get_state(self) -> dict[str, np.ndarray]:
        return {n: v for n, v in self._state().items() if n in self.entry.state}

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        return {n: v for n, v in self._state().items() if n not in self.entry.state}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Replace every trainable weight (keyed by PyTorch name), e.g. with the cloud's fused model."""
        missing = sorted(set(self.weight_names) - set(weights))
        if missing:
            raise DcxError(f"{self.path}: set_weights needs every trainable weight; missing {', '.join(missing)}")
        inner = {v: k for k, v in self.weight_names.items()}
        order = [inner[s.name] for s in self.signatures["restore"].inputs]
        self._call("restore", tuple(weights[n] for n in order))


class TFLiteRuntime:
    format = "tflite"

    def available(self) -> str | None:
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError:
            return "ai-edge-litert is not installed: pip install 'dcx[tflite]'"
        return None

    def version(self) -> str:
        try:
            return f"ai-edge-litert {metadata.version('ai-edge-litert')}"
        except metadata.PackageNotFoundError:
            return "ai-edge-litert (not installed)"

    def reference_checks(self, path: Path, entry: ManifestEntry, reference, tolerance) -> list[Check]:
        return []  # everything is checked by running the artifact itself

    def load(self, path: Path, entry: ManifestEntry, num_threads: int = 1, xnnpack: bool = False) -> TFLiteSession:
        return TFLiteSession(Path(path), entry, num_threads=num_threads, xnnpack=xnnpack)

    def static_checks(self, path: Path, entry: ManifestEntry) -> list[Check]:
        from dcx.backends.tflite.spec import non_builtin_ops, operator_histogram

        path = Path(path)
        try:
            model = path.read_bytes()
        except OSError as e:
            return [Check("readable", False, None, f"{path}: {e.strerror}")]
        checks = []
        try:
            bad = non_builtin_ops(model)
            hist = operator_histogram(model)
        except Exception as e:  # not a flatbuffer we can read
            return [Check("builtin_ops_only", False, None, f"{path}: not a readable .tflite flatbuffer ({e})")]
        checks.append(Check("builtin_ops_only", not bad, None,
                            f"non-builtin ops: {', '.join(bad)}" if bad else f"{sum(hist.values())} ops, "
                            f"{len(hist)} kinds, all TFLite builtins"))
        try:
            interp = _interpreter(path)
            available = interp.get_signature_list()
        except Exception as e:
            checks.append(Check("loads", False, None, f"LiteRT cannot load it: {e}"))
            return checks
        checks.append(Check("loads", True, None, self.version()))
        expected = TRAIN_SIGNATURES if entry.kind == "train" else ("infer",)
        missing = [s for s in expected if s not in available]
        checks.append(Check("signatures", not missing, None,
                            f"missing {', '.join(missing)}" if missing else ", ".join(sorted(available))))
        problems = []
        for sig, spec in entry.signatures.items():
            if sig not in available:
                continue
            runner = interp.get_signature_runner(sig)
            for kind, details in (("inputs", runner.get_input_details()), ("outputs", runner.get_output_details())):
                for s in getattr(spec, kind):
                    d = details.get(s.name)
                    if d is None:
                        problems.append(f"{sig}.{kind}: no {s.name!r}")
                    elif list(d["shape"]) != list(s.shape) or np.dtype(d["dtype"]) != np.dtype(s.dtype):
                        problems.append(f"{sig}.{s.name}: model {list(d['shape'])} {np.dtype(d['dtype'])} vs "
                                        f"manifest {list(s.shape)} {s.dtype}")
        checks.append(Check("signature_specs", not problems, None, "; ".join(problems) or "match the manifest"))
        if entry.kind == "train":
            save = set(available.get("save", {}).get("outputs", []))
            weights = entry.weights
            unmapped = [n for n in entry.trainable if weights.get(n) not in save]
            checks.append(Check("weights_mapped", not unmapped, None,
                                f"unmapped trainable weights: {', '.join(unmapped)}" if unmapped
                                else f"{len(weights)} trainable weights reachable through save/restore"))
        return checks


RUNTIME = TFLiteRuntime()
