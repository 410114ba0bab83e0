"""Export: ONNX / TorchScript / torch.export files that reload and agree; atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import archdsl  # noqa: E402
from archdsl.backends.pytorch import export as ex  # noqa: E402
from archdsl.cli import app  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module")
def lenet():
    arch = archdsl.load(SPECS / "lenet5.arch")
    return arch, arch.to_torch()


@pytest.mark.parametrize("fmt", ex.FORMATS)
def test_each_format_reloads_and_agrees(tmp_path, lenet, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    arch, model = lenet
    report = ex.export(model, arch.graph.input_shape, fmt, tmp_path / f"m{ex.SUFFIXES[fmt]}")
    assert report.path.exists() and report.bytes == report.path.stat().st_size > 0
    assert report.max_abs_diff is None or report.max_abs_diff < 1e-5
    assert [p.name for p in tmp_path.iterdir()] == [report.path.name]  # no temp leftovers


def test_onnx_runs_in_onnxruntime_with_another_batch(tmp_path, lenet):
    ort = pytest.importorskip("onnxruntime")
    arch, model = lenet
    path = ex.export(model, arch.graph.input_shape, "onnx", tmp_path / "m.onnx").path
    x = torch.randn(5, *arch.graph.input_shape)
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert abs(got - model.eval()(x).numpy()).max() < 1e-5


def test_a_failed_export_keeps_the_good_file(tmp_path, lenet, monkeypatch):
    arch, model = lenet
    target = tmp_path / "m.pt2"
    ex.export(model, arch.graph.input_shape, "exported", target)
    good = target.read_bytes()

    def broken(model, x, expected, tmp, opset):
        tmp.write_bytes(b"half a file")
        raise RuntimeError("exporter crashed")

    monkeypatch.setitem(ex._WRITERS, "exported", broken)
    with pytest.raises(ex.ExportError, match="exporter crashed"):
        ex.export(model, arch.graph.input_shape, "exported", target)
    assert target.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt2"]


def test_cli_export_with_weights(tmp_path):
    from typer.testing import CliRunner
    arch = archdsl.load(SPECS / "lenet5.arch")
    weights = tmp_path / "w.pt"
    state = arch.to_torch().state_dict()
    torch.save(state, weights)
    out = tmp_path / "lenet.pt2"
    result = CliRunner().invoke(app, ["export", str(SPECS / "lenet5.arch"), "-f", "exported",
                                      "-o", str(out), "--weights", str(weights)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.exists()
    loaded = torch.export.load(str(out)).module()
    assert torch.equal(loaded.state_dict()["C1.weight"], state["C1.weight"])
    assert "random" not in result.stderr
    result = CliRunner().invoke(app, ["export", str(SPECS / "lenet5.arch"), "-f", "exported",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "note: no --weights: the output holds PyTorch's random initial weights" in \
        result.stderr


def test_cli_export_rejects_weights_that_do_not_fit(tmp_path):
    from typer.testing import CliRunner
    bad = tmp_path / "bad.pt"
    torch.save({"C1.weight": torch.zeros(1)}, bad)
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(app, ["export", str(SPECS / "lenet5.arch"), "-o", str(out),
                                      "--weights", str(bad)])
    assert result.exit_code == 1
    assert "C1.weight: [6, 1, 5, 5] vs [1]" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("spec,settings", [
    ("vit.arch", dict(layers=2, hidden=64, mlp_dim=128, heads=4, patch=8, resolution=32)),
    ("convnext.arch", dict(resolution=64)),
    # Swin's blocks, shortened: shifted window attention (padded), patch merging, token pooling
    ("""arch swin_blocks
input 3x28x28
defaults norm=none act=none
conv4-16/4 pad=0; layernorm
residual { layernorm; window_attention(2) window=3 }
residual { layernorm; window_attention(2) window=3 shift=1 }
residual { layernorm; linear-32 act=gelu; linear-16 }
patch_merging
tokens; gap; FC-10
""", {}),
], ids=["vit", "convnext", "swin_blocks"])
def test_sequence_ops_export_to_onnx(tmp_path, spec, settings):
    """Attention, tokens, class token, position embedding, layer norm and layer scale, shifted
    window attention and patch merging survive ONNX export and run in ONNX Runtime with another
    batch size."""
    ort = pytest.importorskip("onnxruntime")
    arch = (archdsl.load(spec) if "\n" in spec
            else archdsl.load(SPECS / spec, arch=spec.removesuffix(".arch"), **settings))
    torch.manual_seed(0)
    model = arch.to_torch().eval()
    with torch.no_grad():
        for key, param in model.named_parameters():
            if param.dim() <= 1 or "token" in key or "embedding" in key or "layer_scale" in key:
                param.normal_(0.0, 0.5)
    _agrees_in_onnxruntime(ort, model, arch.graph.input_shape, tmp_path)


CHANNEL_AND_ACTIVATION_OPS = """
arch routing
input 6x8x8
defaults norm=bn eps=0.001 act=hardswish
transform: affine(scale=[1, 2, 3, 4, 5, 6], shift=-0.5)
c: conv1x3-12
s: split { | conv1-6 act=hardsigmoid; dwconv3x1 act=mish }
channel_shuffle(3)
concat { chunk(2, 0) | slice(6, 12); leakyrelu(0.2) | elu; selu | celu(2); softplus(2, 5) \\
       | prelu per_channel=true | softsign; logsigmoid | hardtanh(-0.5, 0.5) }
gap
FC-4 act=gelu approximate=tanh
log_softmax
"""


def test_channel_and_activation_ops_export_to_onnx(tmp_path):
    """Split, slice, chunk, shuffle, a fixed affine, per-axis kernels and the activations of
    torch.nn survive ONNX export and run in ONNX Runtime with another batch size."""
    ort = pytest.importorskip("onnxruntime")
    arch = archdsl.load(CHANNEL_AND_ACTIVATION_OPS)
    torch.manual_seed(0)
    model = arch.to_torch().eval()
    _agrees_in_onnxruntime(ort, model, arch.graph.input_shape, tmp_path)


def _agrees_in_onnxruntime(ort, model, input_shape, tmp_path) -> None:
    """Exported to ONNX, the model computes in ONNX Runtime, at another batch size, what it
    computes in PyTorch."""
    path = ex.export(model, input_shape, "onnx", tmp_path / "m.onnx").path
    x = torch.randn(3, *input_shape)
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert abs(got - want).max() < 1e-4 * max(1.0, float(abs(want).max()))
