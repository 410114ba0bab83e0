"""The PyTorch backend against analysis (the contract) and against torchvision (the oracle)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from zoo_sampling import sampled_zoo  # noqa: E402

import archdsl  # noqa: E402
from archdsl.api import unique_archs  # noqa: E402
from archdsl.backends import pytorch as backend  # noqa: E402
from archdsl.ops import OPS  # noqa: E402

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.arch"))


def _archs():
    """Every network of the zoo once (index files like vgg.arch repeat others, and a family's
    default is often one of its named members)."""
    return [pytest.param(spec, name, id=f"{spec.stem}:{name}")
            for spec, name in unique_archs(SPECS, distinct=True)]


def test_every_op_is_lowered_or_marked_unsupported():
    covered = (set(backend.MODULES) | set(backend.FUNCTIONS) | set(backend.NODE_FUNCTIONS)
               | set(backend.PARAMETERS) | set(backend.UNSUPPORTED))
    ops = {name for name, op in OPS.items() if op.lowers_to is None and name != "input"}
    assert ops <= covered, f"ops without a PyTorch lowering: {sorted(ops - covered)}"
    assert all(reason for reason in backend.UNSUPPORTED.values())


@pytest.mark.parametrize("spec,name", list(_archs()))
def test_module_matches_analysis(spec, name):
    """The contract: numel == analysed params, forward shape == inferred shape. Shapes are
    checked on the meta device (PyTorch's own shape rules, no arithmetic), so the whole zoo
    is cheap; the numbers themselves are checked against torchvision and TVM elsewhere."""
    arch = archdsl.load(spec, arch=name)
    with torch.device("meta"):
        model = arch.to_torch().eval()
        assert sum(p.numel() for p in model.parameters()) == arch.stats().totals["params"]
        for batch in (1, 2, 5):
            y = model(torch.empty(batch, *arch.graph.input_shape))
            assert tuple(y.shape) == (batch, *arch.graph.output_shape)


# Networks over 8 GMACs take tens of seconds each on the 2-core CI machine; every op pattern
# they use is covered by a smaller member of their family. ARCHDSL_FULL_ZOO=1 runs them too.
HEAVY_MACS = 8e9


def _skip_if_heavy(arch) -> None:
    if os.environ.get("ARCHDSL_FULL_ZOO") != "1" and arch.stats().totals["macs"] > HEAVY_MACS:
        pytest.skip("over 8 GMACs; set ARCHDSL_FULL_ZOO=1 to run it")


# (spec, arch, torchvision constructor, does the spec end with the paper's softmax?)
TORCHVISION_TWINS = [
    *[("resnet.arch", f"resnet{d}", f"resnet{d}", False) for d in (18, 34, 50, 101, 152)],
    ("alexnet.arch", "alexnet_1gpu", "alexnet", False),
    *[(f"vgg_{c}.arch", f"vgg_{c}", f"vgg{n}", True)
      for c, n in (("a", 11), ("b", 13), ("d", 16), ("e", 19))],
    *[(f"vgg_{c}.arch", f"vgg{n}_bn", f"vgg{n}_bn", True)
      for c, n in (("a", 11), ("b", 13), ("d", 16), ("e", 19))],
    *[("resnext.arch", n, n, False)
      for n in ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d")],
    *[("wide_resnet.arch", n, n, False) for n in ("wide_resnet50_2", "wide_resnet101_2")],
    ("mobilenet_v2.arch", "mobilenet_v2", "mobilenet_v2", False),
    ("densenet.arch", "densenet121", "densenet121", False),
    ("densenet.arch", "densenet161", "densenet161", False),
    ("efficientnet.arch", "efficientnet_b0", "efficientnet_b0", False),
    ("convnext.arch", "convnext_tiny", "convnext_tiny", False),
    ("convnext.arch", "convnext_small", "convnext_small", False),
    ("vit.arch", "vit_b_16", "vit_b_16", False),
    ("vit.arch", "vit_b_32", "vit_b_32", False),
    ("vit.arch", "vit_l_16", "vit_l_16", False),
    *[("swin.arch", n, n, False) for n in ("swin_t", "swin_s", "swin_b")],
    *[("swin_v2.arch", n, n, False) for n in ("swin_v2_t", "swin_v2_s", "swin_v2_b")],
    *[("shufflenet_v2.arch", n, n, False)
      for n in ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
                "shufflenet_v2_x2_0")],
    ("mobilenet_v3.arch", "mobilenet_v3_large", "mobilenet_v3_large", False),
    ("mobilenet_v3.arch", "mobilenet_v3_small", "mobilenet_v3_small", False),
    ("regnet.arch", "regnet_y_400mf", "regnet_y_400mf", False),
    ("regnet.arch", "regnet_x_400mf", "regnet_x_400mf", False),
    *[("squeezenet.arch", n, n, False) for n in ("squeezenet1_0", "squeezenet1_1")],
    ("mnasnet.arch", "mnasnet0_5", "mnasnet0_5", False),
    # at 128 pixels (torchvision's pooling is adaptive): 0.9 GMACs instead of 8.4 at 384
    ("efficientnet_v2.arch", "efficientnet_v2_s", "efficientnet_v2_s", False, {},
     {"resolution": 128}),
    # without the training-time auxiliary classifiers; with and without transform_input
    *[(spec, name, tv_name, False, {"aux_logits": False, "init_weights": False, **t}, t)
      for spec, name, tv_name in (("googlenet.arch", "googlenet_torchvision", "googlenet"),
                                  ("inception_v3.arch", "inception_v3", "inception_v3"))
      for t in ({}, {"transform_input": True})],
]
# Parameters torchvision initialises to (near) constants that would hide a mistake downstream
# of them (ConvNeXt's layer scale is 1e-6, ViT's head is zero, Swin's head bias is zero and its
# relative position biases are too small to tell a wrong index): randomised before comparing.
_CONSTANT_AT_INIT = ("layer_scale", "class_token", "pos_embedding", "head.weight",
                     "head.bias", "relative_position_bias_table")


@pytest.mark.parametrize("twin", TORCHVISION_TWINS,
                         ids=[t[1] + "".join(f"-{k}" for k in t[5]) if len(t) > 5 else t[1]
                              for t in TORCHVISION_TWINS])
def test_loads_torchvision_weights_and_agrees(twin):
    """(spec, arch, torchvision builder, softmax at the end?[, builder kwargs, our settings])"""
    spec, name, tv_name, softmax, kwargs, settings = (*twin, {}, {})[:6]
    torchvision = pytest.importorskip("torchvision")
    arch = archdsl.load(SPECS[0].parent / spec, arch=name, **settings)
    _skip_if_heavy(arch)
    torch.manual_seed(0)
    reference = getattr(torchvision.models, tv_name)(**kwargs).eval()
    with torch.no_grad():
        for key, param in reference.named_parameters():
            if key.endswith(_CONSTANT_AT_INIT):
                param.normal_(0.0, 0.5)
    ours = arch.to_torch().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, *arch.graph.input_shape)  # 224×224, or the spec's (Swin v2: 256×256)
    with torch.no_grad():
        expected = reference(x)
        if softmax:
            expected = torch.softmax(expected, dim=1)
        got = ours(x)
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("spec,name", sampled_zoo(SPECS))
def test_module_exports_as_one_graph(spec, name):
    """torch.export captures every spec whole (no graph breaks) and computes the same."""
    arch = archdsl.load(spec, arch=name)
    _skip_if_heavy(arch)
    model = arch.to_torch().eval()
    x = torch.randn(2, *arch.graph.input_shape)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-5)


# one spec per family of ops: residual add + bn, concat + lrn, depthwise, groups
COMPILE_SAMPLE = [("resnet18.arch", "resnet18"), ("googlenet.arch", "googlenet"),
                  ("mobilenet_v1.arch", "mobilenet_v1"), ("alexnet.arch", "alexnet")]


@pytest.mark.parametrize("spec,name", COMPILE_SAMPLE, ids=[n for _, n in COMPILE_SAMPLE])
def test_module_compiles_without_graph_breaks(spec, name):
    arch = archdsl.load(SPECS[0].parent / spec, arch=name)
    model = arch.to_torch().eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, *arch.graph.input_shape)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_inductor_compiles_lenet():
    arch = archdsl.load(SPECS[0].parent / "lenet5.arch")
    model = arch.to_torch().eval()
    x = torch.randn(4, *arch.graph.input_shape)
    with torch.no_grad():
        assert torch.allclose(torch.compile(model)(x), model(x), atol=1e-5)


@pytest.mark.parametrize("resolution", [128, 160, 192])
def test_resolution_parameter_changes_the_module(resolution):
    arch = archdsl.load(SPECS[0].parent / "mobilenet_v1.arch", resolution=resolution, alpha=0.5)
    model = arch.to_torch().eval()
    assert sum(p.numel() for p in model.parameters()) == arch.stats().totals["params"]
    with torch.no_grad():
        y = model(torch.randn(1, 3, resolution, resolution))
    assert tuple(y.shape[1:]) == arch.graph.output_shape


def test_num_classes_replaces_the_head_and_the_rest_transfers():
    from archdsl.backends.pytorch import freeze, load_weights
    torchvision = pytest.importorskip("torchvision")
    arch = archdsl.load(SPECS[0].parent / "resnet.arch", arch="resnet18")
    model = arch.to_torch(num_classes=10)
    assert model.fc.out_features == 10
    diff = load_weights(model, torchvision.models.resnet18().state_dict(), strict=False)
    assert [k for k, _, _ in diff.mismatched] == ["fc.weight", "fc.bias"]
    assert not diff.missing and not diff.unexpected
    trainable = freeze(model)
    assert trainable == ["fc.weight", "fc.bias"]
    assert set(freeze(model, last_stages=1)) == {"fc.weight", "fc.bias"} | {
        n for n, _ in model.named_parameters() if n.startswith("layer4.")}


def test_strict_load_reports_a_per_tensor_diff():
    from archdsl.backends.pytorch import WeightsMismatch, load_weights
    model = archdsl.load(SPECS[0].parent / "lenet5.arch").to_torch()
    state = dict(model.state_dict())
    state["extra.weight"] = state.pop("F5.weight")
    state["C1.bias"] = torch.zeros(3)
    with pytest.raises(WeightsMismatch) as info:
        load_weights(model, state)
    text = str(info.value)
    assert "F5.weight" in text and "extra.weight" in text and "C1.bias: [6] vs [3]" in text


def test_activation_shared_by_two_branches_is_not_overwritten():
    # an in-place ReLU on a tensor another branch also reads would feed it relu(c), not c
    arch = archdsl.load("arch t\ninput 4x5x5\nconv3-4 act=none\n"
                        "concat { relu | conv1-4 act=none }\n")
    model = arch.to_torch().eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        c = model.get_submodule("0")(x)
        expected = torch.cat([torch.relu(c), model.get_submodule("2")(c)], 1)
        assert torch.allclose(model(x), expected)


def test_the_callers_input_is_never_modified():
    model = archdsl.load("arch r\ninput 2x3x3\nrelu\nconv1-2\n").to_torch()
    x = torch.randn(1, 2, 3, 3)
    before = x.clone()
    model(x)
    assert torch.equal(x, before)


def test_in_place_ops_keep_training_correct():
    """Gradients through in-place ReLU and residual adds equal those of an out-of-place copy."""
    arch = archdsl.load(SPECS[0].parent / "resnet.arch", arch="resnet18")
    model = backend.to_torch(arch.graph).train()
    reference = backend.to_torch(arch.graph, in_place=False).train()
    reference.load_state_dict(model.state_dict())
    assert any(getattr(m, "inplace", False) for m in model.modules())
    assert not any(getattr(m, "inplace", False) for m in reference.modules())
    x = torch.randn(2, 3, 64, 64)
    for m in (model, reference):
        m(x).square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_scopes_index_like_sequential():
    model = archdsl.load(SPECS[0].parent / "resnet.arch", arch="resnet50").to_torch()
    assert len(model.layer3) == 6
    assert model.layer1[0].conv1 is model.get_submodule("layer1.0.conv1")
    assert model.layer1[0].downsample[0].kernel_size == (1, 1)


def test_droppath_is_identity_in_eval_and_drops_whole_samples_in_training():
    arch = archdsl.load("arch s\ninput 4x3x3\nresidual { conv3-4; droppath(0.5) }\n")
    model = arch.to_torch()
    x = torch.randn(64, 4, 3, 3)
    branch = model.get_submodule("0")
    with torch.no_grad():
        model.eval()
        assert torch.allclose(model(x), x + branch(x))
        model.train()
        torch.manual_seed(0)
        delta = model(x) - x  # per sample: 0 (dropped) or 2·branch (kept, rescaled by 1/(1-p))
        dropped = delta.flatten(1).abs().amax(1) == 0
        assert 10 < int(dropped.sum()) < 54
        assert torch.allclose(delta[~dropped], 2 * branch(x)[~dropped], atol=1e-6)


def test_parameter_ops_read_their_parameter_at_call_time(tmp_path):
    """class_token, pos_embedding and layerscale hold one tensor on their scope under the
    layer's name; a state_dict loaded with assign=True (new tensor objects) takes effect."""
    path = tmp_path / "t.arch"
    path.write_text("arch t\ninput 4x2x2\nscale: layerscale(0.5)\ntokens\n"
                    "class_token: class_token\nenc: (pos: pos_embedding)\ntoken(0)\n")
    model = archdsl.load(path).to_torch().eval()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        "scale": (4, 1, 1), "class_token": (1, 1, 4), "enc.pos": (1, 5, 4)}
    x = torch.randn(2, 4, 2, 2)
    state = {"scale": torch.full((4, 1, 1), 2.0), "class_token": torch.arange(4.0).view(1, 1, 4),
             "enc.pos": torch.ones(1, 5, 4)}
    model.load_state_dict(state, assign=True)
    with torch.no_grad():
        out = model(x)
    # token 0 is the class token plus its position embedding, whatever the input
    assert torch.equal(out, (torch.arange(4.0) + 1).expand(2, 4))
    path.write_text("arch t\ninput 4x2x2\nscale: layerscale(0.5)\n")
    scaled = archdsl.load(path).to_torch()
    assert torch.equal(scaled(x), 0.5 * x)


@pytest.mark.parametrize("act", sorted(n for n, op in OPS.items() if op.category == "act"))
def test_every_activation_trains_in_place_as_out_of_place(act):
    """After a conv, an activation may run in place (its input is dead after it): outputs and
    gradients equal those of a copy that never writes in place."""
    required = {"threshold": " threshold=0.1 value=2"}  # attributes without a default
    arch = archdsl.load(f"arch t\ninput 3x5x5\nc: conv3-4 act={act}{required.get(act, '')}\n")
    model = backend.to_torch(arch.graph).train()
    reference = backend.to_torch(arch.graph, in_place=False).train()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 5, 5)
    outs = []
    for m in (model, reference):
        torch.manual_seed(0)  # rrelu draws its slopes in training: the same ones for both
        outs.append(m(x))
    assert torch.allclose(outs[0], outs[1])
    for out in outs:
        out.square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
