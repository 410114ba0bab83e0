"""Training costs (archdsl.training) against PyTorch: the activations autograd keeps for
backward, counted with torch.autograd.graph.saved_tensors_hooks on CPU (each storage once;
parameters and buffers are not activations), for torchvision's ResNet-18, ViT-B/16,
small Swins (v1 and v2 blocks) and a small MaxViT (block and grid attention),
MobileNetV3-Small (hard sigmoid gates) and ShuffleNetV2 x0.5 (channel split and shuffle),
trained whole and frozen but for the head. At 64×64 for speed: what is kept scales with
the activations, and ViT's attention at 17 tokens and Swin's windows are still there; at
224×224, measured once for a batch of two, ResNet-18 keeps 42.34 MiB and ViT-B/16
225.37 MiB, archdsl's counts to the byte.

Equal within 0.5% (measured: to the byte). What is kept once per batch, whatever its size
(batch norm's batch mean and 1/σ, Swin v2's position-bias MLP), is counted so
(Training.kept_for(batch))."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import archdsl  # noqa: E402
from archdsl.backends.pytorch import freeze  # noqa: E402
from archdsl.training import costs, trainable_names  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"


def saved_per_image(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Bytes autograd keeps for backward, per image."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values()) / x.shape[0]


@pytest.mark.parametrize("name,frozen", [
    ("resnet18", False), ("resnet18", True), ("vit_b_16", False), ("vit_b_16", True),
    ("swin_t", False), ("swin_v2_t", False), ("mobilenet_v3_small", False),
    ("shufflenet_v2_x0_5", False), ("maxvit_t", False)])
def test_kept_for_backward_is_what_autograd_keeps(name, frozen):
    torch.manual_seed(0)
    model = _model(name).train()
    # the zoo's spec, at 64×64: the same graph as the imported one (tests/backends/
    # test_import_zoo.py), which takes any resolution
    graph = archdsl.from_torch(model, (3, 64, 64), name).load().graph
    trains = None
    if frozen:
        assert set(freeze(model)) == {n for n, _ in model.named_parameters()
                                      if n.startswith(("fc.", "heads.", "head."))}
        trains = trainable_names(graph)
    batch = 2
    measured = saved_per_image(model, torch.randn(batch, *graph.input_shape)) * batch
    estimated = costs(graph, 4, trains).kept_for(batch)
    assert abs(estimated - measured) <= 0.005 * measured


def _model(name: str) -> torch.nn.Module:
    """The torchvision model; Swin's blocks in a small Swin (2 stages, 32 channels), MaxViT's
    in a small MaxViT, which have every op of the big ones and take seconds less to build."""
    if name.startswith("vit"):
        return getattr(torchvision.models, name)(image_size=64)
    if name.startswith("swin"):
        from torchvision.models import swin_transformer as sw
        v2 = {"block": sw.SwinTransformerBlockV2, "downsample_layer": sw.PatchMergingV2} \
            if "v2" in name else {}
        return sw.SwinTransformer([4, 4], 32, [2, 2], [2, 4], [4, 4], **v2)
    if name == "maxvit_t":  # built for 64×64: two stages, 4×4 windows and grids
        from torchvision.models import maxvit
        return maxvit.MaxVit((64, 64), 16, 4, [16, 32], [2, 1], 8, 0.2)
    return getattr(torchvision.models, name)()


def test_frozen_counts_match_the_backends_freeze():
    arch = archdsl.load(SPECS / "resnet18.arch")
    model = arch.to_torch()
    trainable = set(freeze(model, last_stages=1))
    names = trainable_names(arch.graph, last_stages=1)
    t = costs(arch.graph, 4, names)
    assert t.trainable == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert t.trainable + t.frozen == arch.stats().totals["params"]


# One small network per op, the op after a conv (so that its input needs a gradient): what
# autograd keeps equals what the op's declaration says. Activations and regularizers are
# written `conv3-8; OP` unless listed.
EXAMPLES = {
    "conv": "conv3-8", "fc": "FC-6", "linear": "linear-6", "maxpool": "maxpool3/2 pad=1",
    "avgpool": "avgpool", "gap": "gap", "gmp": "gmp", "adaptive_avgpool": "adaptive_avgpool(3)",
    "bn": "bn", "layernorm": "layernorm", "layerscale": "layerscale(0.5)", "lrn": "lrn",
    "flatten": "flatten; FC-4", "tokens": "tokens; linear-8", "class_token": "tokens; "
    "class_token: class_token; linear-8", "pos_embedding": "tokens; pos: pos_embedding",
    "attention": "tokens; attention(2)", "token": "tokens; token(3); FC-4",
    "add": "residual { conv3-8 }", "mul": "gate { gap; conv1-8 act=sigmoid }",
    "concat": "concat { conv1-4 | conv3-4 }", "grid": "tokens; grid; conv1-4",
    "window_attention": "window_attention(2) window=4 shift=2",
    "patch_merging": "patch_merging", "softmax": "gap; flatten; softmax",
    "dropout": "dropout(0.3)", "droppath": "residual { conv3-8; droppath(0.2) }",
    "slice": "slice(2, 6); conv1-4", "channel_shuffle": "channel_shuffle(2); conv1-4",
    "affine": "affine(0.5, 0.1); conv1-4", "threshold": "threshold(0.1, 2)",
}


def _example(name: str) -> str | None:
    from archdsl.ops import OPS
    op = OPS[name]
    if name in EXAMPLES:
        return EXAMPLES[name]
    if op.category in ("act", "regularizer") and all(
            s.default is not None and s.default.__class__.__name__ != "object"
            for s in op.attrs.values()):
        return name
    return None


def _ops() -> list[str]:
    from archdsl.ops import OPS
    return sorted(n for n, op in OPS.items() if n != "input" and op.lowers_to is None)


def test_every_op_has_an_example():
    missing = [n for n in _ops() if _example(n) is None]
    assert not missing, f"add these to EXAMPLES: {missing}"


@pytest.mark.parametrize("name", _ops())
def test_every_op_keeps_what_its_declaration_says(name):
    text = _example(name)
    if text is None:
        pytest.skip("no example (test_every_op_has_an_example says so)")
    arch = archdsl.load(f"arch t\ninput 8x8x8\nconv3-8 act=none\n{text}\n")
    torch.manual_seed(0)
    model = arch.to_torch().train()
    batch = 2
    measured = saved_per_image(model, torch.randn(batch, 8, 8, 8)) * batch
    assert costs(arch.graph, 4).kept_for(batch) == measured
