"""Every architecture of the zoo compiles for llvm and computes what the PyTorch backend does."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from zoo_sampling import sampled_zoo  # noqa: E402

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.arch"))
# where a spec has a resolution parameter, a small one keeps CI fast
SMALL = {"resolution": 96}
# MaxViT's windows must divide every stage's map: at 96 pixels those are 24, 12, 6 and 3
SMALL_FOR_SPEC = {"maxvit": {"window": 3}}
# Untuned TVM code is slow and folding big weights takes time: a network over 7 GMACs costs
# 20-40 s here (VGG, ResNet-101/152, the wide and 101-layer ResNeXts). Those are opt-in with
# ARCHDSL_FULL_ZOO=1; their ops are all covered by smaller members of their families, and
# vgg_a_lrn (the only LRN network of that size) always runs. Compile time also grows with the
# number of kernels: a network of over 300 nodes runs in CI only as the first of its file
# (DenseNet-121 and EfficientNet-B0 stand for the deeper members of their families, which
# add depth, not new kernels, at 10-30 s each). And a network whose kinds of layer an earlier
# one of its file has all is stood for by it (zoo_sampling.py).
HEAVY_MACS = 7e9
MANY_NODES = 300
ALWAYS = {"vgg_a_lrn"}
# networks whose every kind of layer a small network in test_tvm.py compiles in seconds
STOOD_FOR = {"maxvit": "test_tvm.py's two-stage MaxViT at 32 pixels stands for it (36 s here)"}


def _too_big(arch, first_of_file: bool) -> str | None:
    if arch.name in ALWAYS:
        return None
    if arch.name in STOOD_FOR:
        return STOOD_FOR[arch.name]
    if arch.stats().totals["macs"] > HEAVY_MACS:
        return "over 7 GMACs"
    if len(arch.graph.nodes) > MANY_NODES and not first_of_file:
        return f"over {MANY_NODES} nodes; the first network of its file stands for it"
    return None


@pytest.mark.parametrize("spec,name", sampled_zoo(SPECS, _too_big))
def test_llvm_build_matches_pytorch(spec, name):
    arch = archdsl.load(spec, arch=name)
    small = {k: v for k, v in {**SMALL, **SMALL_FOR_SPEC.get(Path(spec).stem, {})}.items()
             if k in arch.settings}
    if small:
        arch = arch.with_settings(**small)
    torch.manual_seed(0)
    model = arch.to_torch().eval()
    compiled = backend.compile(arch.graph, "llvm", weights=model.state_dict())
    x = torch.randn(1, *arch.graph.input_shape)
    with torch.no_grad():
        ours32 = model(x).numpy()
        ref64 = model.double()(x.double()).numpy()
    got = compiled(x.numpy())
    scale = max(float(abs(ref64).max()), 1e-12)
    # TVM's float32 error against a float64 reference may be what float32 PyTorch's is,
    # within a factor of 2, or 1e-4 of the logit scale, whichever is larger
    allowed = max(1e-4 * scale, 2 * float(abs(ours32 - ref64).max()))
    assert float(abs(got - ref64).max()) <= allowed


@pytest.mark.parametrize("spec,name", [("vgg_e.arch", "vgg_e"), ("resnet50.arch", "resnet50")])
def test_cuda_build_of_big_networks_holds_cuda_kernels(spec, name):
    """No GPU needed: the kernels are generated and compiled here (NVRTC or nvcc)."""
    import shutil
    if shutil.which("nvcc") is None:
        pytest.importorskip("cuda.bindings", reason="neither nvcc nor NVRTC is available")
    arch = archdsl.load(SPECS[0].parent / spec, arch=name)
    compiled = backend.compile(arch.graph, {"kind": "cuda", "arch": "sm_90",
                                            "host": {"kind": "llvm"}})
    kinds = {m.kind for m in compiled.device_modules()}
    assert kinds == {"cuda"}
    source = compiled.device_modules()[0].inspect_source()
    assert source.count("__global__") >= 10
