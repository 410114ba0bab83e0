"""The TVM backend against the PyTorch backend (the oracle), with the same weights and inputs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.ops import OPS  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"

# Every op at a tiny resolution: residual add, concat, gate (mul), mul with broadcasting,
# depthwise and grouped convs, LRN, pooling with padding and ceil mode (pool3 hits PyTorch's
# "last window starts in the padding" rule), adaptive pooling that upsamples, BN folded into
# conv/FC and BN standing alone (mixbn, fcbn), a conv with a bias before its BN, softmax over
# channels on a C×H×W tensor, every activation (with their attributes), and the sequence ops:
# linear and layernorm over the channels of a map and over tokens, layer scale, shifted window
# attention on a map that windows do not divide, patch merging, tokens and back to a map, class
# token, position embedding, multi-head attention on a residual, one token picked, tokens
# pooled; channel routing: split, slice, chunk, channel shuffle, a fixed affine per channel.
EVERY_OP = r"""
arch every_op(classes = 10)
input 3x16x16
defaults norm=bn act=relu
stem: conv3-8 bias=true
norm1: lrn(4)
res: residual { conv1: conv3-8 act=relu6; conv2: conv3-8 act=none }
act1: relu
pool1: maxpool3/2 pad=1
mix: concat { conv1-8 act=gelu | dwconv3 act=swish; conv1-8 groups=2 act=hardswish \
             | avgpool3/1 pad=1 }
mixbn: bn
acts: concat { hardsigmoid | hardtanh(-0.5, 0.5) | leakyrelu(0.1) | elu(0.9) | celu(1.5) \
             | selu | softplus(2, 1) | mish | softsign | logsigmoid | prelu per_channel=true \
             | prelu | gelu approximate=tanh | log_softmax | hardshrink(0.3) | softshrink \
             | tanhshrink | threshold(0.1, 2) | rrelu(0.1, 0.3) | softmin }
squeeze: conv1-24 act=none
asym: conv3x1-24 dilation=2x1 act=none
shuf: split(8, 16) { affine(scale=[0.5, 1, 2, 3, -1, 1, 1, 2], shift=0.25) | conv1-16 act=none }
cs: channel_shuffle(3)
ck: concat { chunk(2, 1) | slice(0, 12); affine(scale=2, shift=[0.5]) }
se: gate { gap; conv1-4 norm=none; conv1-24 norm=none act=sigmoid }
attn: softmax
sum: add { conv3-24 act=tanh | }
gm: mul { | gmp }
pool2: avgpool3/2 pad=1 ceil=true
pool3: maxpool2/3 pad=1 ceil=true
apx: adaptive_avgpool(4x3)
ap: adaptive_avgpool(3)
lin: linear-16 act=gelu
ln1: layernorm
ls: layerscale(0.5)
wa: residual { window_attention(4) window=2 shift=1 }
pm: patch_merging
tok: tokens
back: grid
tok2: tokens
cls: class_token
pos: pos_embedding
sa: residual { ln2: layernorm eps=1e-6; att: attention(4) }
seqfc: linear-12
first: add { token(1) | gap }
flat: flatten
drop: dropout(0.2)
dp: droppath(0.1)
fc1: FC-32 act=swish
fc2: FC-16 norm=bn act=none
fcbn: bn
fc3: FC-{classes} act=none
"""


def _torch_reference(arch, seed: int = 0):
    """The PyTorch model in eval mode and its state_dict, with batch norms as after training:
    random scales and shifts, and running statistics measured on random inputs. (A fresh BN is
    the identity, which would hide folding mistakes; random statistics that do not normalize
    let the signal fade through deep nets until the output is all biases.)"""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    model = arch.to_torch()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        # tensors initialised to a constant (layer norm's ones and zeros, a layer scale, a
        # class token of zeros) would hide mistakes in how they are applied
        for p in model.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.uniform_(0.5, 1.5)
        for m in norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
            m.momentum = None  # a cumulative average over the calibration batch
            m.reset_running_stats()
        model.eval()
        for m in norms:
            m.train()
        model(torch.randn(16, *arch.graph.input_shape))
    model.eval()
    return model, model.state_dict()


def _run_torch(model, x: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.from_numpy(x.copy())).numpy()  # a copy: some activations are inplace


def _assert_close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> None:
    assert got.shape == ref.shape
    scale = float(np.abs(ref).max())
    diff = float(np.abs(got - ref).max())
    assert diff <= rel * scale, f"max |diff| {diff:.3g} > {rel} × output scale {scale:.3g}"


def test_every_op_is_lowered_or_marked_unsupported():
    covered = set(backend.LOWERINGS) | set(backend.UNSUPPORTED)
    ops = {name for name, op in OPS.items() if op.lowers_to is None and name != "input"}
    assert ops <= covered, f"ops without a TVM lowering: {sorted(ops - covered)}"
    assert all(reason for reason in backend.UNSUPPORTED.values())
    assert not set(backend.LOWERINGS) & set(backend.UNSUPPORTED)


def test_every_op_spec_uses_every_op():
    used = {n.op for n in archdsl.load(EVERY_OP).graph.nodes}
    ops = {name for name, op in OPS.items() if op.lowers_to is None}
    assert ops <= used, f"EVERY_OP misses {sorted(ops - used)}"


# Window attention's variants: windows that do not divide the map (padding), non-square windows
# and shifts, a window bigger than the map (no shift), Swin v2's position-bias MLP with cosine
# attention and its patch merging (norm after), no position bias and no biases, MaxViT's grid
# attention (with its 1/sqrt(C) scale and names); tokens → map.
WINDOWS = r"""
arch windows
input 3x30x26
defaults norm=none act=none
conv-16/2 k=2 pad=0
layernorm
residual { layernorm; window_attention(2) window=4 shift=2 }
residual { layernorm; window_attention(4) window={[3, 5]} shift={[1, 2]} }
patch_merging
window_attention(4) window=9 shift=4
patch_merging-24 post_norm=true
window_attention(3) window=3 shift=1 position_bias=mlp cosine=true mlp_hidden=16
window_attention(3) window=2 position_bias=none bias=false
residual { layernorm; window_attention(3) window=2 partition=grid scale=channels keys=maxvit }
tokens
grid(2, 8)
gap
FC-10
"""

CASES = [
    pytest.param(lambda: archdsl.load(SPECS / "lenet5.arch"), 1, id="lenet5"),
    pytest.param(lambda: archdsl.load(EVERY_OP), 2, id="every_op-batch2"),
    pytest.param(lambda: archdsl.load(WINDOWS), 2, id="windows-batch2"),
    pytest.param(lambda: archdsl.load(SPECS / "mobilenet_v1.arch", resolution=64, alpha=0.25), 1,
                 id="mobilenet_v1-64-0.25"),
    # MaxViT at 32 pixels, two stages of one layer: MBConv, block and grid attention, 2×2
    pytest.param(lambda: archdsl.load(SPECS / "maxvit.arch", arch="maxvit", resolution=32,
                                      stem_channels=8, window=2, channels=[8, 16],
                                      depths=[1, 1], head_dim=4), 2, id="maxvit-32"),
]


@pytest.mark.parametrize("make,batch", CASES)
def test_agrees_with_pytorch(make, batch):
    arch = make()
    model, state = _torch_reference(arch)
    compiled = backend.compile(arch.graph, "llvm", weights=state, batch=batch)
    assert compiled.input_shape == (batch, *arch.graph.input_shape)
    x = np.random.default_rng(1).standard_normal(compiled.input_shape).astype(np.float32)
    got = compiled(x)
    assert got.shape == compiled.output_shape == (batch, *arch.graph.output_shape)
    ref = _run_torch(model, x)
    _assert_close(got, ref)
    # the comparison can see the input: another input moves the output 100× the tolerance
    other = _run_torch(model, np.random.default_rng(2).standard_normal(x.shape, np.float32))
    assert np.abs(other - ref).max() > 100 * 1e-4 * np.abs(ref).max()


BN_SPEC = """
arch bnnet
input 3x8x8
c1: conv3-8 norm=bn act=relu
shared: conv1-8 act=none
join: add { bn | relu }
gap
f: FC-4 norm=bn act=none
"""


@pytest.mark.parametrize("fold_bn", [True, False], ids=["folded", "unfolded"])
def test_batch_norm_folded_or_not(fold_bn):
    # `shared` feeds two branches, so its bn must not be folded into it even when folding
    arch = archdsl.load(BN_SPEC)
    model, state = _torch_reference(arch, seed=3)
    compiled = backend.compile(arch.graph, weights=state, fold_bn=fold_bn)
    x = np.random.default_rng(2).standard_normal(compiled.input_shape).astype(np.float32)
    _assert_close(compiled(x), _run_torch(model, x))


def test_random_weights_are_deterministic_and_match_pytorch():
    torch = pytest.importorskip("torch")
    arch = archdsl.load(SPECS / "lenet5.arch")
    weights = backend.random_weights(arch.graph, seed=7)
    assert set(weights) == set(backend.weight_shapes(arch.graph))
    again = backend.random_weights(arch.graph, seed=7)
    assert all(np.array_equal(weights[k], again[k]) for k in weights)
    compiled = backend.compile(arch.graph, seed=7)  # no weights: random_weights(graph, seed)
    model = arch.to_torch().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    x = np.random.default_rng(3).standard_normal(compiled.input_shape).astype(np.float32)
    _assert_close(compiled(torch.from_numpy(x)), _run_torch(model, x))  # a torch input too


def test_weights_that_do_not_fit_are_rejected():
    arch = archdsl.load(SPECS / "lenet5.arch")
    good = backend.random_weights(arch.graph)
    missing = {k: v for k, v in good.items() if k != "C1.weight"}
    with pytest.raises(backend.WeightsError, match="missing: C1.weight"):
        backend.build_module(arch.graph, missing)
    with pytest.raises(backend.WeightsError, match="unexpected: extra.weight"):
        backend.build_module(arch.graph, {**good, "extra.weight": np.zeros(3)})
    backend.build_module(arch.graph, {**good, "extra.weight": np.zeros(3)}, strict=False)
    wrong = {**good, "F5.bias": np.zeros(7, np.float32)}
    with pytest.raises(backend.WeightsError, match=r"wrong shape: F5.bias: expected \(120,\)"):
        backend.build_module(arch.graph, wrong)


def test_a_window_index_that_is_not_the_windows_is_rejected():
    """The relative-position index addresses the bias table: the lowering computes its own,
    and weights that carry another (another window size, a hostile file) are refused."""
    arch = archdsl.load("arch w\ninput 8x6x6\nwa: window_attention(2) window=3 shift=1\n")
    good = backend.random_weights(arch.graph)
    assert np.array_equal(good["wa.relative_position_index"][:3], [12, 11, 10])
    backend.build_module(arch.graph, good)
    bad = {**good, "wa.relative_position_index": good["wa.relative_position_index"][::-1]}
    with pytest.raises(backend.WeightsError,
                       match="not computed from the window: wa.relative_position_index"):
        backend.build_module(arch.graph, bad)


def test_wrong_input_shape_is_rejected():
    arch = archdsl.load(SPECS / "lenet5.arch")
    compiled = backend.compile(arch.graph)
    with pytest.raises(ValueError, match=r"compiled for input \(1, 1, 32, 32\)"):
        compiled(np.zeros((2, 1, 32, 32), np.float32))


def test_export_library_and_load_round_trip(tmp_path):
    arch = archdsl.load(SPECS / "lenet5.arch")
    compiled = backend.compile(arch.graph, seed=1)
    x = np.random.default_rng(4).standard_normal(compiled.input_shape).astype(np.float32)
    path = compiled.export_library(tmp_path / "lenet5.so")
    # the library and its manifest (its metadata and SHA-256, checked by load), nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet5.so", "lenet5.so.json"]
    manifest = json.loads((tmp_path / "lenet5.so.json").read_text())
    assert manifest["library_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["input"] == [1, 1, 32, 32] and manifest["library"] == "lenet5.so"
    loaded = backend.Compiled.load(path)
    assert loaded.device_kind == "llvm" and not loaded.device_modules()
    assert loaded.meta == compiled.meta
    assert {k: v for k, v in loaded.meta.items() if k != "cpu"} == {
        "arch": "lenet5", "input": [1, 1, 32, 32], "output": [1, 10], "dtype": "float32",
        "output_op": "fc", "weights": "random (seed 1)"}
    assert "sse2" in loaded.meta["cpu"]["features"]  # what its code needs (cpu.needs)
    np.testing.assert_array_equal(loaded(x), compiled(x))


def test_failed_export_leaves_the_old_file(tmp_path, monkeypatch):
    arch = archdsl.load(SPECS / "lenet5.arch")
    compiled = backend.compile(arch.graph)
    target = tmp_path / "net.so"
    target.write_bytes(b"old")
    (tmp_path / "net.so.json").write_text("old manifest")

    def fail(*args, **kwargs):
        raise RuntimeError("linker failed")

    monkeypatch.setattr(type(compiled.module), "export_library", fail)
    with pytest.raises(RuntimeError, match="linker failed"):
        compiled.export_library(target)
    assert target.read_bytes() == b"old" and (tmp_path / "net.so.json").read_text() == \
        "old manifest"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.so", "net.so.json"]


def test_llvm_target_is_the_host_cpu():
    target = backend.make_target("llvm")
    assert target.kind.name == "llvm"
    assert str(target.attrs["mcpu"]) == tvm.get_global_func("tvm.codegen.llvm.GetHostCPUName")()
    gpu = backend.make_target({"kind": "cuda", "arch": "sm_90"})
    assert gpu.kind.name == "cuda" and gpu.host.kind.name == "llvm"


def test_the_host_target_leaves_out_features_its_cpu_name_implies_but_the_host_lacks(
        monkeypatch):
    """A VM may name a CPU whose features it hides (an Emerald Rapids guest without AMX, a
    Skylake-SP one without AVX-512): "llvm" is the host as it is, so its build runs here and
    its schedules take the vector width the host has."""
    from archdsl.backends.tvm import build, cpu
    from archdsl.backends.tvm.schedules.common import Machine
    monkeypatch.setattr(build, "_host_probe", lambda: (
        "sapphirerapids", {"amx-tile": False, "amx-int8": False, "amx-bf16": False,
                           "avx512f": True}))
    target = backend.make_target("llvm")
    need = cpu.needs(target)["features"]
    assert "avx512f" in need and not {"amx-tile", "amx-int8", "amx-bf16"} & set(need)
    assert Machine.of(target).lanes == 16
    # a user's own features stay, the host's lacks are added after them
    given = backend.make_target({"kind": "llvm", "mattr": ["+amx-tile"]})
    assert list(given.attrs["mattr"])[:2] == ["+amx-tile", "-amx-bf16"]
    hidden = {f: False for f in ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")}
    monkeypatch.setattr(build, "_host_probe", lambda: ("skylake-avx512", hidden))
    target = backend.make_target("llvm")
    assert "avx512f" not in cpu.needs(target)["features"]
    assert "avx2" in cpu.needs(target)["features"] and Machine.of(target).lanes == 8
    # the host as LLVM sees it: nothing the code may use is missing here
    monkeypatch.undo()
    assert cpu.missing(cpu.needs(backend.make_target("llvm"))) == []


def _cuda_compiler() -> str | None:
    """TVM compiles CUDA with NVRTC (from the cuda-bindings package) by default, or nvcc."""
    if importlib.util.find_spec("cuda") and importlib.util.find_spec("cuda.bindings"):
        return "nvrtc"
    return "nvcc" if shutil.which("nvcc") else None


def test_cuda_build_holds_device_code(monkeypatch):
    """Build only (no GPU needed): every op lowers and is scheduled as CUDA kernels."""
    compiler = _cuda_compiler()
    if compiler is None or not tvm.runtime.enabled("llvm"):
        pytest.skip("no CUDA compiler (cuda-bindings' NVRTC or nvcc)")
    monkeypatch.setenv("TVM_CUDA_COMPILE_MODE", compiler)
    arch = archdsl.load(EVERY_OP)
    compiled = backend.compile(arch.graph, {"kind": "cuda", "arch": "sm_90"})
    kinds = [m.kind for m in compiled.device_modules()]
    assert kinds == ["cuda"]
    source = compiled.device_modules()[0].inspect_source()
    assert source.count("__global__") >= 10


def test_a_cuda_library_carries_its_compiled_kernels(tmp_path):
    """TVM keeps a CUDA build's kernels as source, compiled as the library loads (through the
    global `tvm_callback_cuda_compile`); an export compiles them with nvcc for the build's GPU
    into the manifest (`cuda_kernels`: the source's SHA-256 → its fatbin), and both loaders
    answer the runtime's hook with them, so that a deployment needs no CUDA compiler. A
    manifest whose kernels are not base64 is refused before anything loads."""
    if shutil.which("nvcc") is None or not tvm.runtime.enabled("llvm"):
        pytest.skip("no nvcc")
    import base64

    import tvm_ffi

    from archdsl.backends.tvm import cuda_kernels
    arch = archdsl.load("arch tiny\ninput 3x8x8\nc: conv3-16 act=relu\ngap\nfc: FC-10\n")
    compiled = backend.compile(arch.graph, {"kind": "cuda", "arch": "sm_80"})
    path = compiled.export_library(tmp_path / "tiny.so")
    manifest = json.loads((tmp_path / "tiny.so.json").read_text())
    source = compiled.device_modules()[0].inspect_source()
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert manifest["gpu"] == {"arch": "sm_80"} and list(manifest["cuda_kernels"]) == [digest]
    binary = base64.b64decode(manifest["cuda_kernels"][digest])
    assert b"-arch sm_80" in binary
    before = tvm_ffi.get_global_func(cuda_kernels.HOOK, allow_missing=True)
    try:
        cuda_kernels.provide(manifest["cuda_kernels"])
        hook = tvm_ffi.get_global_func(cuda_kernels.HOOK)
        assert bytes(hook(source)) == binary
        if before is None:  # no other compiler hooked in: another source is refused
            with pytest.raises(RuntimeError, match="not among those compiled"):
                hook(source + "\n")
    finally:
        if before is not None:
            tvm_ffi.register_global_func(cuda_kernels.HOOK, before, override=True)
        cuda_kernels._previous.clear()
    # examples/deploy.py, with no nvcc on PATH, answers with the manifest's kernels too
    script = f"""
import sys
sys.modules["archdsl"] = sys.modules["torch"] = None
namespace = {{"__name__": "deploy"}}
exec(open({str(SPECS.parent / "examples" / "deploy.py")!r}).read(), namespace)
import json, tvm_ffi
from pathlib import Path
namespace["use_kernels"](json.loads(Path({str(path) + ".json"!r}).read_text())["cuda_kernels"])
source = Path({str(tmp_path / "kernels.cu")!r}).read_text()
binary = bytes(tvm_ffi.get_global_func("tvm_callback_cuda_compile")(source))
Path({str(tmp_path / "kernels.fatbin")!r}).write_bytes(binary)
"""
    (tmp_path / "kernels.cu").write_text(source)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "kernels.fatbin").read_bytes() == binary
    # a manifest whose kernels are not base64: refused, nothing loaded
    manifest["cuda_kernels"][digest] = "not base64!"
    (tmp_path / "tiny.so.json").write_text(json.dumps(manifest))
    from archdsl.backends.tvm.library import LibraryError
    with pytest.raises(LibraryError, match="not base64"):
        backend.Compiled.load(path)


def test_deploy_compiles_a_cuda_librarys_kernels_with_nvcc(tmp_path):
    """A CUDA library holds its kernels as CUDA source, which TVM's CUDA runtime compiles as
    the library loads, through `tvm_callback_cuda_compile`; TVM's own needs TVM's compiler, so
    examples/deploy.py registers one that runs nvcc for the GPU the manifest names (no GPU
    needed to compile: the fatbin holds code for that GPU)."""
    if shutil.which("nvcc") is None or not tvm.runtime.enabled("llvm"):
        pytest.skip("no nvcc")
    arch = archdsl.load("arch tiny\ninput 3x8x8\nc: conv3-16 act=relu\ngap\nfc: FC-10\n")
    compiled = backend.compile(arch.graph, {"kind": "cuda", "arch": "sm_80"})
    # (`archdsl compile` writes the target into the manifest)
    path = compiled.export_library(tmp_path / "tiny.so",
                                   {"target": {"kind": "cuda", "arch": "sm_80"}})
    (tmp_path / "kernels.cu").write_text(compiled.device_modules()[0].inspect_source())
    script = f"""
import sys
sys.modules["archdsl"] = sys.modules["torch"] = None
namespace = {{"__name__": "deploy"}}
exec(open({str(SPECS.parent / "examples" / "deploy.py")!r}).read(), namespace)
import json, tvm_ffi
from pathlib import Path
target = json.loads(Path({str(path) + ".json"!r}).read_text())["target"]
namespace["use_nvcc"](target["arch"])
source = Path({str(tmp_path / "kernels.cu")!r}).read_text()
binary = bytes(tvm_ffi.get_global_func("tvm_callback_cuda_compile")(source))
Path({str(tmp_path / "kernels.fatbin")!r}).write_bytes(binary)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    binary = (tmp_path / "kernels.fatbin").read_bytes()
    assert b"-arch sm_80" in binary and b"-arch sm_90" not in binary


def test_the_tvm_path_needs_no_torch(tmp_path):
    """Compile, run, export and load with torch made unimportable."""
    script = f"""
import sys
sys.modules["torch"] = None  # import torch raises ImportError
import numpy as np
import archdsl
from archdsl.backends import tvm as backend
arch = archdsl.load({str(SPECS / "lenet5.arch")!r})
compiled = backend.compile(arch.graph, seed=2)
x = np.ones(compiled.input_shape, np.float32)
path = compiled.export_library({str(tmp_path / "net.so")!r})
assert np.array_equal(backend.Compiled.load(path)(x), compiled(x))
assert "torch" not in [m.split(".")[0] for m, v in sys.modules.items() if v is not None]
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _runtime_only_tvm(site: Path) -> None:
    """`site`/tvm and `site`/tvm_ffi: TVM's packages without the compiler library (and the
    3rdparty sources), as a deployment ships them: links into the installed packages."""
    import tvm_ffi
    source = Path(tvm.__file__).parent
    package = site / "tvm"
    (package / "lib").mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name not in ("lib", "3rdparty"):
            (package / entry.name).symlink_to(entry)
    for lib in (source / "lib").iterdir():
        if "compiler" not in lib.name:
            (package / "lib" / lib.name).symlink_to(lib)
    (site / "tvm_ffi").symlink_to(Path(tvm_ffi.__file__).parent)


def test_a_saved_library_runs_on_tvms_runtime_alone(tmp_path):
    """`archdsl run` and `Compiled.load` under a TVM without its compiler library and without
    torch: what a deployment has."""
    arch = archdsl.load(SPECS / "lenet5.arch")
    compiled = backend.compile(arch.graph, seed=3)
    path = compiled.export_library(tmp_path / "net.so")
    x = np.random.default_rng(5).standard_normal(compiled.input_shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", compiled(x))
    _runtime_only_tvm(tmp_path / "site")
    script = f"""
import sys
sys.modules["torch"] = None
import numpy as np
import tvm
assert tvm.__file__.startswith({str(tmp_path / "site")!r}), tvm.__file__
assert "tvm_compiler" not in tvm.base._LOADED_LIBS and tvm.base._RUNTIME_ONLY
from archdsl.backends.tvm.runtime import Compiled
got = Compiled.load({str(path)!r})(np.load({str(tmp_path / "x.npy")!r}))
assert np.array_equal(got, np.load({str(tmp_path / "want.npy")!r}))
from archdsl.cli import main
sys.argv = ["archdsl", "run", {str(path)!r}, "--input", {str(tmp_path / "x.npy")!r}]
main()
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    top = int(np.argmax(compiled(x)))
    assert done.stdout.startswith(f"[0] top-5 logits: class {top}: "), done.stdout
    # examples/deploy.py: the same without archdsl installed (only numpy and the runtime)
    script = f"""
import sys
sys.modules["archdsl"] = sys.modules["torch"] = None
sys.argv = ["deploy.py", {str(path)!r}, "--input", {str(tmp_path / "x.npy")!r}, "--repeat", "2"]
exec(open({str(SPECS.parent / "examples" / "deploy.py")!r}).read())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"[0] top-5 logits: class {top}: ")
    assert "lenet5 batch 1 on cpu" in lines[1]
