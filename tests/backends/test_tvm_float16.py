"""float16 builds of the TVM backend (llvm and CUDA), against PyTorch float32 as the oracle:
convolutions and matrix products accumulate in float32 and are cast back to float16 after
their bias (backends/tvm/context.py, `_ACCUMULATE`), and softmax, norms and means run in float32
between casts (`_WIDE_OPS`), as PyTorch's float16 forward does."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from test_tvm import WINDOWS, _cuda_compiler, _run_torch, _torch_reference  # noqa: E402

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.backends.tvm import schedules  # noqa: E402
from archdsl.backends.tvm.schedules.common import iter_kinds, top_blocks  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"

needs_cuda_compiler = pytest.mark.skipif(_cuda_compiler() is None,
                                         reason="no CUDA compiler (NVRTC or nvcc)")

# Long reductions on a small input: 3×3 convs over 256 channels (2,304 terms a sum) and an FC
# over 4,096 features, where a float16 sum loses digits.
DEEP = r"""
arch deep_reductions
input 3x8x8
c1: conv3-256 norm=bn act=relu
c2: conv3-256 norm=bn act=relu
c3: conv3-64 norm=bn act=relu
flat: flatten
fc1: FC-64 act=relu
fc2: FC-10 act=none
"""


@pytest.mark.parametrize("spec,params,tol", [
    ("lenet5.arch", {}, 1e-2),
    # a deep, narrow depthwise net with random BN statistics: PyTorch's own float16 forward is
    # 4% off its float32 one here, so the bound is loose (it still catches garbage and NaNs)
    ("mobilenet_v1.arch", {"resolution": 64, "alpha": 0.25}, 0.15),
    # window attention keeps Q, K, V, the scores and its softmax in float32 (3.4e-4 measured)
    (WINDOWS, {}, 5e-3),
], ids=["lenet5", "mobilenet_v1-64-0.25", "windows"])
def test_float16_llvm_build_agrees_with_pytorch_float32(spec, params, tol):
    arch = archdsl.load(spec if "\n" in spec else SPECS / spec, **params)
    model, state = _torch_reference(arch)
    compiled = backend.compile(arch.graph, weights=state, dtype="float16")
    assert compiled.dtype == "float16"
    x = np.random.default_rng(1).standard_normal(compiled.input_shape).astype(np.float32)
    got = compiled(x)  # float32 in: cast to the compiled dtype
    assert got.dtype == np.float16 and np.isfinite(got).all()
    ref = _run_torch(model, x)
    assert np.abs(got.astype(np.float32) - ref).max() <= tol * np.abs(ref).max()
    assert (got.argmax(axis=1) == ref.argmax(axis=1)).all()


@needs_cuda_compiler
def test_float16_cuda_build_holds_half_precision_kernels(monkeypatch):
    monkeypatch.setenv("TVM_CUDA_COMPILE_MODE", _cuda_compiler())
    arch = archdsl.load(SPECS / "lenet5.arch")
    compiled = backend.compile(arch.graph, {"kind": "cuda", "arch": "sm_80"}, dtype="float16")
    (cuda,) = compiled.device_modules()
    source = cuda.inspect_source()
    assert source.count("__global__") >= 4 and "half" in source


def test_float16_deep_reductions_accumulate_in_float32():
    # Max error relative to the output scale, measured on this spec (seed 0): float16
    # accumulation 1.3% (0.8-1.9% over seeds 0-4), float32 accumulation 0.071% (0.045-0.13%),
    # PyTorch's own float16 forward 0.12%. The bound lies between.
    arch = archdsl.load(DEEP)
    model, state = _torch_reference(arch)
    compiled = backend.compile(arch.graph, weights=state, dtype="float16")
    x = np.random.default_rng(1).standard_normal(compiled.input_shape).astype(np.float32)
    got = compiled(x)
    assert got.dtype == np.float16
    ref = _run_torch(model, x)
    diff, scale = float(np.abs(got.astype(np.float32) - ref).max()), float(np.abs(ref).max())
    assert diff <= 3e-3 * scale, f"max |diff| {diff:.3g} > 0.3% of the output scale {scale:.3g}"


def _fused(arch, dtype: str) -> tvm.IRModule:
    mod = backend.build_module(arch.graph, dtype=dtype)
    with backend.make_target("llvm"):
        return tvm.transform.Sequential(backend._fuse_passes())(mod)


def _accumulators(func) -> set[str]:
    """The dtypes the function's reduction blocks write."""
    sch = tvm.s_tir.Schedule(func)
    return {str(sch.get(b).writes[0].source.dtype) for b in top_blocks(sch)
            if "R" in iter_kinds(sch, b)}


def test_float16_products_cast_in_their_epilogue_and_keep_their_schedules():
    arch = archdsl.load(DEEP)
    mod = _fused(arch, "float16")
    products = {gv.name_hint: f for gv, f in mod.functions_items()
                if isinstance(f, tvm.tirx.PrimFunc) and re.search("conv2d|matmul", gv.name_hint)}
    assert len(products) == 5
    # one kernel each: the product in float32, the bias, the cast to float16, the activation
    for name, func in products.items():
        assert "_cast" in name and _accumulators(func) == {"float32"}, name
        assert str(func.params[-1].ty.dtype) == "float16", name
    # scheduled by the rules of NCHW convs (float32 builds block their channels) and the
    # dense rule (FC-10 padded to a whole vector in both); float32 builds have no casts
    marks = {dtype: sorted(schedules.scheduled_by(f) for gv, f in schedules.schedule_cpu(
                 _fused(arch, dtype), backend.make_target("llvm"), {}).functions_items()
                 if re.search("conv2d|matmul", gv.name_hint)) for dtype in ("float16", "float32")}
    assert marks["float16"] == ["conv2d"] * 3 + ["dense", "dense"]
    assert marks["float32"] == ["conv2d_blocked"] * 3 + ["dense", "dense"]
    assert not any("cast" in gv.name_hint for gv in _fused(arch, "float32").get_global_vars())


@needs_cuda_compiler
def test_float16_cuda_convs_and_matmuls_accumulate_in_float(monkeypatch):
    monkeypatch.setenv("TVM_CUDA_COMPILE_MODE", _cuda_compiler())
    arch = archdsl.load("""
arch small
input 16x8x8
c1: conv3-16 act=relu
flat: flatten
fc: FC-16
""")
    compiled = backend.compile(arch.graph, {"kind": "cuda", "arch": "sm_80"}, dtype="float16")
    source = compiled.device_modules()[0].inspect_source()
    # the register (or shared) partial sums of each kernel: float, not half
    partials = re.findall(r"\b(half|float)\d* (conv2d|matmul)\w*_local\w*\[", source)
    assert {kind for _, kind in partials} == {"conv2d", "matmul"}
    assert {dtype for dtype, _ in partials} == {"float"}
    assert "half" in source


# Reductions without a weight matrix: a layer norm, a global average pool, and a softmax over
# 1,000 classes (a float16 sum of 1,000 exponentials).
WIDE = r"""
arch wide_reductions
input 16x8x8
c1: conv3-32 act=relu
ln: layernorm
gap
flat: flatten
fc: FC-1000
sm: softmax
"""


def test_float16_softmax_norm_and_mean_run_in_float32():
    # Max error relative to the largest probability, measured here: with these ops in float16
    # 0.35%, in float32 (between two casts) 0.065%, as PyTorch's own float16 forward.
    arch = archdsl.load(WIDE)
    model, state = _torch_reference(arch)
    compiled = backend.compile(arch.graph, weights=state, dtype="float16")
    x = np.random.default_rng(2).standard_normal(compiled.input_shape).astype(np.float32)
    ref = _run_torch(model, x)
    diff, scale = float(np.abs(compiled(x).astype(np.float32) - ref).max()), float(ref.max())
    assert diff <= 1.5e-3 * scale, f"max |diff| {diff:.3g} > 0.15% of the top output {scale:.3g}"
    # ... between casts that fuse into their kernels: no kernel of its own for a cast
    mod = _fused(arch, "float16")
    assert not [gv.name_hint for gv in mod.get_global_vars() if gv.name_hint.startswith("cast")]
