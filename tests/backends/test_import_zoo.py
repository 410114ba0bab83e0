"""`archdsl import` over torchvision's classifiers.

Every model of `torchvision.models.list_models(module=torchvision.models)` either imports
and round-trips — the spec's parameters equal the module's, its MACs equal FlopCounterMode's
(FLOPs / 2, on the meta device) — or is listed in STOPS with the op archdsl lacks. Imported
twins of the hand-written zoo are the same graph (`archdsl diff`: no layer changes) in at
most twice the lines. The spec's PyTorch module loads the original state_dict strictly and
computes the same logits; its TVM build computes them too.

Tracing all 80 models takes about two minutes on the 2-core CI machine, so by default one or
two models per family run (the sweep, the logits and the diffs); ARCHDSL_FULL_ZOO=1 runs
every model (and the logits of the big ones).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import archdsl  # noqa: E402
from archdsl.backends.pytorch.importer import (  # noqa: E402
    ImportFailed,
    check_counts,
    import_source,
)
from archdsl.diff import diff_archs  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"
FULL = os.environ.get("ARCHDSL_FULL_ZOO") == "1"
MODELS = torchvision.models.list_models(module=torchvision.models)

# What stops each model that does not import: an op its import reports (archdsl lacks it).
# None now: MaxViT's partition attention layers import as window_attention (partition=grid).
STOPS: dict[str, str] = {}
# one or two per family, each stop kind once
SAMPLE = {"alexnet", "vgg11_bn", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2",
          "googlenet", "densenet121", "mobilenet_v2", "mnasnet0_5", "efficientnet_b0",
          "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf", "squeezenet1_1",
          "convnext_tiny", "vit_b_16", "inception_v3", "shufflenet_v2_x1_0",
          "mobilenet_v3_small", "swin_t", "swin_v2_t", "maxvit_t"}


def _params(names, sample):
    skip = pytest.mark.skip(reason="one model per family by default; ARCHDSL_FULL_ZOO=1 "
                                   "runs all")
    return [pytest.param(n, id=n, marks=[] if FULL or n in sample else [skip]) for n in names]


def _quiet_import(name: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GoogLeNet's and Inception's init warnings
        return import_source(f"torchvision:{name}", **kw)


def test_the_stop_list_names_only_torchvision_classifiers():
    assert set(STOPS) <= set(MODELS) and SAMPLE <= set(MODELS)


@pytest.mark.parametrize("name", _params(MODELS, SAMPLE))
def test_imports_and_counts_equal_the_module(name):
    if name in STOPS:
        with pytest.raises(ImportFailed) as info:
            _quiet_import(name)
        assert STOPS[name] in {u.op for u in info.value.unmapped}
        return
    imported = _quiet_import(name)
    check = check_counts(imported)
    assert check.ok, check.describe()
    archdsl.validate(imported.load().graph)


# (spec, arch in it, torchvision name): the hand-written zoo's torchvision twins
TWINS = [
    *[("resnet.arch", f"resnet{d}", f"resnet{d}") for d in (18, 34, 50, 101, 152)],
    ("alexnet.arch", "alexnet_1gpu", "alexnet"),
    *[(f"vgg_{c}.arch", f"vgg{n}_bn", f"vgg{n}_bn")
      for c, n in (("a", 11), ("b", 13), ("d", 16), ("e", 19))],
    *[(f"vgg_{c}.arch", f"vgg_{c}", f"vgg{n}")
      for c, n in (("a", 11), ("b", 13), ("d", 16), ("e", 19))],
    *[("resnext.arch", n, n) for n in ("resnext50_32x4d", "resnext101_32x8d",
                                       "resnext101_64x4d")],
    *[("wide_resnet.arch", n, n) for n in ("wide_resnet50_2", "wide_resnet101_2")],
    ("mobilenet_v2.arch", "mobilenet_v2", "mobilenet_v2"),
    *[("densenet.arch", f"densenet{d}", f"densenet{d}") for d in (121, 161, 169, 201)],
    *[("efficientnet.arch", f"efficientnet_b{i}", f"efficientnet_b{i}") for i in range(8)],
    *[("convnext.arch", f"convnext_{v}", f"convnext_{v}")
      for v in ("tiny", "small", "base", "large")],
    *[("vit.arch", n, n) for n in ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")],
    *[("swin.arch", n, n) for n in ("swin_t", "swin_s", "swin_b")],
    *[("swin_v2.arch", n, n) for n in ("swin_v2_t", "swin_v2_s", "swin_v2_b")],
    ("maxvit.arch", "maxvit_t", "maxvit_t"),
    ("googlenet.arch", "googlenet_torchvision", "googlenet"),
    ("inception_v3.arch", "inception_v3", "inception_v3"),
    *[("mobilenet_v3.arch", n, n) for n in ("mobilenet_v3_large", "mobilenet_v3_small")],
    *[("shufflenet_v2.arch", f"shufflenet_v2_x{w}", f"shufflenet_v2_x{w}")
      for w in ("0_5", "1_0", "1_5", "2_0")],
    *[("regnet.arch", f"regnet_{k}_{s}", f"regnet_{k}_{s}") for k in "xy"
      for s in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")],
    ("regnet.arch", "regnet_y_128gf", "regnet_y_128gf"),
    *[("mnasnet.arch", n, n) for n in ("mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3")],
    *[("efficientnet_v2.arch", n, n) for n in ("efficientnet_v2_s", "efficientnet_v2_m",
                                               "efficientnet_v2_l")],
    # (not SqueezeNet: the import names the flatten of its forward `classifier.4`, the spec
    # writes it after the classifier, as torchvision's module does)
]
# Where the hand-written spec is not torchvision's network, and how: layers only it has.
PAPER_ONLY = {f"vgg{n}{bn}": {"softmax"} for n in (11, 13, 16, 19) for bn in ("", "_bn")}
TWIN_SAMPLE = {"resnet50", "alexnet", "vgg16_bn", "resnext50_32x4d", "mobilenet_v2",
               "densenet121", "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t",
               "inception_v3", "mobilenet_v3_small", "regnet_y_400mf"}


def _lines(path: Path) -> int:
    """A spec file's lines with those of the files it includes."""
    text = path.read_text()
    return len(text.splitlines()) + sum(_lines(path.parent / inc) for inc in
                                        re.findall(r'^include "([^"]+)"', text, re.M))


@pytest.mark.parametrize("spec,arch,name", [
    pytest.param(*t, id=t[2], marks=[] if FULL or t[2] in TWIN_SAMPLE else
                 [pytest.mark.skip(reason="ARCHDSL_FULL_ZOO=1 compares every twin")])
    for t in TWINS])
def test_imported_twin_is_the_hand_written_graph_in_few_lines(spec, arch, name):
    hand = archdsl.load(SPECS / spec, arch=arch)
    imported = _quiet_import(name, input_shape=hand.graph.input_shape)
    d = diff_archs(hand, imported.load())
    assert {x.name for x in d.layers} == PAPER_ONLY.get(name, set())
    assert all(x.kind == "removed" for x in d.layers)
    assert len(imported.text.splitlines()) <= 2 * _lines(SPECS / spec)


# Models built for real (random weights) and run at 64×64 (ViT at its 224): the spec's
# module takes their state_dict strictly and gives the same logits.
LOGITS_SAMPLE = {"resnet18", "mobilenet_v2", "squeezenet1_1", "efficientnet_b0", "googlenet",
                 "swin_t", "convnext_tiny", "shufflenet_v2_x0_5", "mobilenet_v3_small"}
HEAVY = {"vit_h_14", "regnet_y_128gf", "regnet_y_32gf", "regnet_x_32gf", "vit_l_16",
         "vit_l_32", "efficientnet_v2_l", "convnext_large", "resnext101_64x4d", "swin_b",
         "swin_v2_b",
         "resnext101_32x8d", "wide_resnet101_2", "efficientnet_b7", "vgg19_bn", "vgg19"}


def _reference(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    # the auxiliary classifiers are not in the inference graph (nor the import); the
    # pretrained weights' input transform is: each channel rescaled (one `affine`)
    kw = {"aux_logits": False, "init_weights": False, "transform_input": True} \
        if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, **kw).eval()
    with torch.no_grad():
        # constants at init (layer scale 1e-6, ViT's zero head, BN's unit statistics)
        # would hide a mistake downstream of them
        for key, p in model.named_parameters():
            if key.endswith(("layer_scale", "class_token", "pos_embedding", "head.weight",
                             "head.bias")):
                p.normal_(0.0, 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name", [
    pytest.param(n, id=n, marks=[] if (FULL or n in LOGITS_SAMPLE) else
                 [pytest.mark.skip(reason="ARCHDSL_FULL_ZOO=1 runs every model's logits")])
    for n in MODELS if n not in STOPS])
def test_spec_module_takes_the_state_dict_and_gives_the_same_logits(name):
    if FULL and name in HEAVY and os.environ.get("ARCHDSL_IMPORT_HEAVY") != "1":
        pytest.skip("minutes on CPU; ARCHDSL_IMPORT_HEAVY=1 runs it")
    model = _reference(name)
    # ViT and MaxViT are built for 224 pixels (their position embedding, MaxViT's grids)
    res = 224 if name.startswith(("vit", "maxvit")) else 80 if name == "inception_v3" else 64
    arch = archdsl.from_torch(model, (3, res, res), name).load()
    ours = arch.to_torch().eval()
    ours.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        want, got = model(x), ours(x)
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


def test_tvm_build_of_an_imported_spec_computes_what_pytorch_does():
    pytest.importorskip("tvm")
    model = _reference("resnet18")
    arch = archdsl.from_torch(model, (3, 64, 64), "resnet18").load()
    compiled = arch.compile("llvm", weights=model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model.double()(x.double()).numpy()
    got = compiled(x.numpy())
    assert abs(got - want).max() <= 1e-4 * max(1.0, abs(want).max())
