"""Structure recovery (archdsl.recover) on hand-made flat graphs: no torch involved.

A FlatNet is what an importer hands over — archdsl ops with module paths; recovery must give
text that elaborates to exactly that graph (checked independently here with `differences`)
and reads like a person's spec: blocks with parameters, residual/concat/gate, few labels."""

from __future__ import annotations

import pytest

import archdsl
from archdsl.recover import StructureError, recover
from archdsl.recover.flat import FlatNet
from archdsl.recover.verify import differences


def conv(net: FlatNet, x: int, out: int, name: str, k: int = 3, stride: int = 1,
         bias: bool = False) -> int:
    return net.add("conv", {"out": out, "k": k, "stride": stride, "pad": k // 2,
                            "bias": bias}, [x], name).id


def conv_bn(net: FlatNet, x: int, out: int, prefix: str, n: int, stride: int = 1,
            act: bool = True) -> int:
    x = conv(net, x, out, f"{prefix}.conv{n}", stride=stride)
    x = net.add("bn", {}, [x], f"{prefix}.bn{n}").id
    return net.add("relu", {}, [x], scope=tuple(prefix.split("."))).id if act else x


def resnet_like() -> FlatNet:
    """A stem, then six residual blocks (torchvision's BasicBlock layout), two of them with
    a projection shortcut, then the classifier."""
    net = FlatNet.start("tiny_resnet", (3, 32, 32))
    x = conv_bn(net, 0, 16, "stem", 1)
    for i, (c, s) in enumerate([(16, 1), (16, 1), (32, 2), (32, 1), (64, 2), (64, 1)]):
        p = f"blocks.{i}"
        net.classes[p] = "BasicBlock"
        y = conv_bn(net, x, c, p, 1, s)
        y = conv_bn(net, y, c, p, 2, act=False)
        short = x
        if s != 1:
            net.classes[p + ".downsample"] = "Sequential"
            short = conv(net, x, c, p + ".downsample.0", k=1, stride=s)
            short = net.add("bn", {}, [short], p + ".downsample.1").id
        x = net.add("add", {}, [y, short], scope=("blocks", str(i))).id
        x = net.add("relu", {}, [x], f"{p}.relu").id
    net.classes["blocks"] = "Sequential"
    x = net.add("gap", {}, [x], "avgpool").id
    net.output = net.add("fc", {"out": 10, "bias": True}, [x], "fc").id
    return net


def check(net: FlatNet) -> str:
    text = recover(net).text
    arch = archdsl.load(text)
    archdsl.validate(arch.graph)
    assert differences(arch.graph, net) is None
    return text


def test_residual_blocks_become_one_block_with_parameters():
    text = check(resnet_like())
    assert text.count("block basic_block(") == 1
    # channels and stride vary between the instances: parameters, stride defaulting to 1
    assert "block basic_block(c, stride = 1)" in text
    assert "residual {" in text and "shortcut(downsample)" in text
    assert "basic_block(32, stride=2)" in text and "basic_block(64, stride=2)" in text
    # the norm and activation are written as part of their convolution's layer
    assert "defaults norm=bn" in text and "conv1: conv3-16" in text
    assert "fc: FC-{classes}" in text and "arch tiny_resnet(classes = 10)" in text


def test_names_are_the_module_paths():
    net = resnet_like()
    graph = archdsl.load(check(net)).graph
    held = {n.name for n in net.nodes if n.keep_name}
    names = {n.name for n in graph.nodes}
    assert held <= names
    assert "blocks.2.downsample.0" in names and "blocks.5.bn2" in names


def test_repeated_layers_and_unlabelled_indices():
    """A Sequential's children numbered 0, 1, 2...: no labels needed; repeats as `x N`."""
    net = FlatNet.start("plain", (3, 16, 16))
    x = 0
    idx = 0
    for _ in range(3):
        x = conv(net, x, 8, f"features.{idx}", bias=True)
        x = net.add("relu", {}, [x], f"features.{idx + 1}").id
        idx += 2
    net.classes["features"] = "Sequential"
    net.output = net.add("maxpool", {"k": 2, "stride": 2}, [x], f"features.{idx}").id
    text = check(net)
    assert "features: ( conv3-8 x3; maxpool )" in text
    assert "defaults act=relu" in text


def test_functional_op_in_a_numbered_scope_takes_no_index_a_module_needs():
    # a flatten made by forward() between modules 0 and 1 must not take the name `1`
    net = FlatNet.start("f", (4, 2, 2))
    x = net.add("gap", {}, [0], "head.0").id
    x = net.add("flatten", {}, [x], scope=("head",)).id
    net.output = net.add("fc", {"out": 3, "bias": True}, [x], "head.1").id
    text = check(net)
    assert "flatten: flatten" in text


def test_concat_gate_and_dense():
    net = FlatNet.start("joins", (8, 8, 8))
    a = conv(net, 0, 4, "mix.a", k=1, bias=True)
    b = conv(net, 0, 4, "mix.b", bias=True)
    x = net.add("concat", {}, [a, b], scope=("mix",)).id
    g = net.add("gap", {}, [x], scope=("se",)).id
    g = conv(net, g, 8, "se.fc", k=1, bias=True)
    g = net.add("sigmoid", {}, [g], scope=("se",)).id
    x = net.add("mul", {}, [x, g], scope=("se",)).id
    d = net.add("bn", {}, [x], "grow.norm").id
    d = conv(net, d, 4, "grow.conv")
    net.output = net.add("concat", {}, [x, d], scope=("grow",)).id
    text = check(net)
    assert "concat { a: conv1-4 | b: conv3-4 }" in text
    assert "gate {" in text and "dense {" in text


def test_dashed_labels_as_they_are_and_quoted_labels_for_other_names():
    net = FlatNet.start("q", (3, 8, 8))
    x = conv(net, 0, 4, "block1.block1-0.conv")
    net.output = conv(net, x, 4, "block1.block 1.conv")
    text = check(net)
    assert 'block1-0: ( conv: conv3-4 )' in text
    assert '"block 1": ( conv: conv3-4 )' in text


def test_a_graph_that_is_not_series_parallel_is_refused_at_its_node():
    # b feeds both the first sum and, past it, the second: no nesting writes that
    net = FlatNet.start("x", (4, 4, 4))
    a = conv(net, 0, 4, "a")
    b = conv(net, 0, 4, "b")
    s = net.add("add", {}, [a, b]).id
    c = conv(net, s, 4, "c")
    net.output = net.add("add", {}, [c, b]).id
    with pytest.raises(StructureError) as info:
        recover(net)
    assert net.node(info.value.node).op in ("conv", "add")


def test_quoted_label_with_a_dot_is_a_syntax_error():
    with pytest.raises(archdsl.ArchErrors) as info:
        archdsl.load('arch t\ninput 3x8x8\n"a.b": conv3-4\n')
    assert "cannot be a name" in str(info.value)


def test_norms_with_their_own_settings_attach_and_a_projection_first_is_an_add():
    """Batch norms at eps=0.001 attach to their convs (the settings on the layer or the
    defaults line; the one at PyTorch's eps says so); a shortcut computed before the body
    (RegNet's `proj(x) + f(x)`) is written first, as an add, so the layers keep their order."""
    net = FlatNet.start("proj_first", (8, 8, 8))
    x = 0
    for i, eps in enumerate((0.001, 0.001, 1e-5)):
        x = conv(net, x, 8, f"c{i}.conv")
        x = net.add("bn", {"eps": eps, "momentum": 0.1}, [x], f"c{i}.bn").id
        x = net.add("relu", {}, [x], scope=(f"c{i}",)).id
    short = conv(net, x, 16, "block.proj.0", k=1, stride=2)
    short = net.add("bn", {"eps": 0.001, "momentum": 0.1}, [short], "block.proj.1").id
    y = conv_bn(net, x, 16, "block.f", 1, stride=2)
    y = conv(net, y, 16, "block.f.conv2")
    net.output = net.add("add", {}, [short, y], scope=("block",)).id
    text = check(net)
    assert "defaults norm=bn act=relu eps=0.001" in text and "bn:" not in text
    assert "eps=1e-05" in text and "add {" in text and "shortcut" not in text
