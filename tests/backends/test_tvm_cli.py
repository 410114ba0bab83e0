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
    result = invoke("compile", SPECS / "lenet5.arch", "-o", tmp_path / "x.so",
                    "-t", "llvm -mcpu=znver9")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "LLVM does not know the CPU `znver9`" in result.output
    assert "did you mean znver" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text,mcpu", [("llvm -mcpu=znver4", "znver4"),
                                       ("llvm:haswell", "haswell"),
                                       ('{"kind": "llvm", "mcpu": "x86-64-v3"}', "x86-64-v3")])
def test_a_target_names_its_cpu_in_any_of_three_forms(text, mcpu):
    from archdsl.cli import parse_target
    assert parse_target(text) == {"kind": "llvm", "mcpu": mcpu}


def _foreign_cpu() -> str | None:
    """An x86-64 whose features this host lacks (AVX-512 on an AVX2 host; AMX or AVX-512
    FP16 on an AVX-512 one), or None if the host has them all."""
    from archdsl.backends import tvm as backend
    from archdsl.backends.tvm import cpu
    for name in ("znver4", "sapphirerapids", "graniterapids", "diamondrapids"):
        if cpu.missing(cpu.needs(backend.make_target({"kind": "llvm", "mcpu": name}))):
            return name
    return None


def test_a_library_for_another_cpu_records_its_needs_and_refuses_to_run_here(tmp_path):
    """Built for a CPU with features this host lacks, the library says which, and `run` (and
    Compiled.load) refuses before any kernel runs (no SIGILL); the host's own build runs."""
    foreign = _foreign_cpu()
    if foreign is None:
        pytest.skip("this host has the features of every CPU tried")
    lib = tmp_path / "far.so"
    result = invoke("compile", SPECS / "lenet5.arch", "-o", lib, "-t", f"llvm -mcpu={foreign}")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "far.so.json").read_text())
    assert manifest["target"] == {"kind": "llvm", "mcpu": foreign}
    assert manifest["cpu"]["mcpu"] == foreign and "avx2" in manifest["cpu"]["features"]
    result = invoke("run", lib)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"was built for {foreign} and needs CPU features this CPU lacks" in result.output
    from archdsl.backends.tvm import cpu
    from archdsl.backends.tvm.runtime import Compiled
    with pytest.raises(cpu.CpuFeaturesError, match="--target llvm"):
        Compiled.load(lib)
    here = tmp_path / "here.so"
    assert invoke("compile", SPECS / "lenet5.arch", "-o", here).exit_code == 0
    assert json.loads((tmp_path / "here.so.json").read_text())["cpu"]["features"]
    assert invoke("run", here).exit_code == 0


def test_missing_features_are_read_from_the_kernels_flags(tmp_path):
    from archdsl.backends.tvm import cpu
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 pni avx avx2 fma abm bmi1\n")
    flags = cpu.host_flags(info)
    assert {"avx2", "abm", "pni"} <= flags
    need = {"mcpu": "znver4", "features": ["avx2", "avx512f", "lzcnt", "sse3", "avx512vnni",
                                           "no-such-feature"]}
    assert cpu.missing(need, flags) == ["avx512f", "avx512vnni"]
    assert cpu.missing(need, None if cpu.host_flags() else set()) is not None
    assert cpu.missing(None, flags) == [] and cpu.missing({"features": "avx"}, flags) == []
    assert cpu.host_flags(tmp_path / "absent") is None


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
    if shutil.which("nvcc"):  # the kernels, compiled at export, travel in the manifest
        assert list(manifest["cuda_kernels"]) and manifest["gpu"] == {"arch": "sm_90"}
        # an architecture nvcc does not know: said plainly, nothing written
        bad = tmp_path / "bad.so"
        refused = invoke("compile", SPECS / "lenet5.arch", "-t", "cuda:sm_19", "-o", bad)
        assert refused.exit_code == 1 and "Traceback" not in refused.output
        assert "nvcc could not compile the CUDA kernels for sm_19" in refused.output
        assert "cuda:sm_XX" in refused.output and not bad.exists()
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
