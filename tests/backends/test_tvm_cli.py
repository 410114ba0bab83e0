"""`archdsl compile` and `archdsl run` (TVM)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

tvm = pytest.importorskip("tvm")
np = pytest.importorskip("numpy")

from typer.testing import CliRunner  # noqa: E402

import archdsl  # noqa: E402
from archdsl.cli import app  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_compile_writes_library_and_manifest_then_run(tmp_path):
    lib = tmp_path / "lenet.so"
    result = invoke("compile", SPECS / "lenet5.arch", "-o", lib, "--batch", "2")
    assert result.exit_code == 0, result.output
    assert "note: no --weights: the output holds seeded random weights" in result.stderr
    manifest = json.loads((tmp_path / "lenet.so.json").read_text())
    assert manifest["arch"] == "lenet5" and manifest["input"] == [2, 1, 32, 32]
    assert manifest["output"] == [2, 10] and manifest["dtype"] == "float32"
    assert len(manifest["spec_sha256"]) == 64
    x = np.random.default_rng(1).standard_normal((2, 1, 32, 32)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", lib, "--input", tmp_path / "x.npy", "--top", "3")
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if "top-3" in ln]
    assert len(lines) == 2 and all("top-3 logits: class " in ln for ln in lines)  # FC-10 ends
    assert "holds random (seed 0) weights" in result.stderr
    assert "random input" not in result.stderr
    # the printed best class is the PyTorch model's best class for the same random weights
    from archdsl.backends import tvm as backend
    arch = archdsl.load(SPECS / "lenet5.arch")
    expected = backend.compile(arch.graph, batch=2)(x).argmax(axis=1)
    assert [int(ln.split("logits: class ")[1].split(":")[0]) for ln in lines] == list(expected)


def test_run_says_what_it_prints_and_what_was_random(tmp_path):
    spec = tmp_path / "t.arch"
    spec.write_text("arch t\ninput 1x8x8\nconv3-4 act=relu\ngap\nFC-3\nsoftmax\n")
    lib = tmp_path / "t.so"
    assert invoke("compile", spec, "-o", lib).exit_code == 0
    result = invoke("run", lib, "--top", "2")
    assert result.exit_code == 0, result.output
    assert "note: no --input: running on a random input" in result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("[0] top-2 probabilities: class ")
    probs = [float(c.split(": ")[1]) for c in line.split("probabilities: ")[1].split(", ")]
    assert all(0 <= p <= 1 for p in probs) and probs == sorted(probs, reverse=True)


def test_compile_with_weights_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    arch = archdsl.load(SPECS / "lenet5.arch")
    model = arch.to_torch().eval()
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    compiled = arch.compile("llvm", weights=weights)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert abs(compiled(x) - model(x).numpy()).max() < 1e-4


def test_run_rejects_an_input_of_the_wrong_shape(tmp_path):
    lib = tmp_path / "l.so"
    assert invoke("compile", SPECS / "lenet5.arch", "-o", lib).exit_code == 0
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 32, 32), "float32"))
    result = invoke("run", lib, "-i", tmp_path / "bad.npy")
    assert result.exit_code == 1
    assert "has shape [1, 3, 32, 32]; the library takes [1, 1, 32, 32]" in result.output
    (tmp_path / "junk.so").write_text("not a library")
    result = invoke("run", tmp_path / "junk.so")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"cannot load {tmp_path / 'junk.so'}" in result.output


def test_a_bad_target_writes_nothing(tmp_path):
    result = invoke("compile", SPECS / "lenet5.arch", "-o", tmp_path / "x.so", "-t", "{oops")
    assert result.exit_code == 1 and "not valid JSON" in result.output
    assert list(tmp_path.iterdir()) == []


def test_cuda_build_holds_device_code(tmp_path):
    if shutil.which("nvcc") is None:
        try:
            import cuda.bindings  # noqa: F401  (NVRTC, shipped with torch's CUDA wheels)
        except ImportError:
            pytest.skip("neither nvcc nor NVRTC is available")
    lib = tmp_path / "l.so"
    result = invoke("compile", SPECS / "lenet5.arch", "-t", "cuda", "-o", lib)
    assert result.exit_code == 0, result.output
    assert ", cuda," in result.output
    manifest = json.loads((tmp_path / "l.so.json").read_text())
    assert manifest["target"]["kind"] == "cuda" and manifest["target"]["arch"] == "sm_90"
    # running it needs TVM's CUDA runtime, a driver and the GPU: said plainly where missing
    result = invoke("run", lib)
    if tvm.cuda(0).exist:
        assert result.exit_code == 0 and "top-5" in result.output, result.output
    else:
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert ("holds cuda code, and TVM's runtime for cuda cannot be loaded here" in
                result.output or "cannot run" in result.output), result.output


def test_compile_prints_progress_lines_when_not_a_terminal(tmp_path, monkeypatch):
    from archdsl import progress
    monkeypatch.setattr(progress, "EVERY", 0.2)
    result = invoke("compile", SPECS / "lenet5.arch", "-o", tmp_path / "l.so")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "compiling lenet5 for llvm with TVM..." in lines
    assert any("(still running, " in ln for ln in lines)
    assert any(ln.startswith("compiling lenet5 for llvm with TVM: writing the library (")
               for ln in lines)
    assert result.stdout.startswith("wrote ")
