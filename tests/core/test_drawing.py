"""The Graphviz drawing (archdsl.drawing): every zoo architecture draws and renders, boxes are
layers (or blocks at a depth), joins are drawn as join nodes, scopes as clusters, and output is
written atomically with clear errors when `dot` is missing or the suffix is unknown.

The SVG/PNG tests need Graphviz's `dot` and are skipped without it (CI installs it); the
.dot output and the error paths are tested everywhere."""

from __future__ import annotations

import shutil
from pathlib import Path

import graphviz
import pytest

from archdsl.analysis import Conventions
from archdsl.api import load, load_spec
from archdsl.drawing import draw, render
from archdsl.errors import UsageError

SPECS = Path(__file__).resolve().parents[2] / "specs"
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(
    not HAVE_DOT, reason="Graphviz `dot` is not installed (apt-get install graphviz)")


def _zoo() -> list[tuple[str, str]]:
    """(file, arch) for every architecture the spec files offer, each name once."""
    out: dict[str, str] = {}
    for path in sorted(SPECS.glob("*.arch")):
        for name in load_spec(path).own:
            out.setdefault(name, path.name)
    return [(file, name) for name, file in out.items()]


ZOO = _zoo()
JOINS = {"add": "⊕", "mul": "⊗", "concat": "concat"}


def _net(file: str, arch: str | None = None):
    return load(SPECS / file, arch=arch)


def _titles(svg: str) -> set[str]:
    """The Graphviz ids in an SVG: node names and cluster_... names."""
    import re
    return {t.replace("&#45;", "-") for t in re.findall(r"<title>([^<]*)</title>", svg)}


def test_zoo_is_collected():
    names = [a for _, a in ZOO]
    assert len(names) == len(set(names)) and {"resnet50", "googlenet", "lenet5"} <= set(names)


# ---------------------------------------------------------------- every spec, rendered

@needs_dot
@pytest.mark.parametrize("file,arch", ZOO, ids=[a for _, a in ZOO])
def test_every_spec_renders_svg_per_layer(tmp_path, file, arch):
    net = _net(file, arch)
    out = render(draw(net), tmp_path / f"{arch}.svg")
    svg = out.read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    titles = _titles(svg)
    for row in net.stats().rows:  # one box (or join node) per layer, named by the layer
        assert row.name in titles, row.name
    assert {"input", "output"} <= titles
    joins = [n for n in net.graph.nodes if n.op in JOINS]
    for node in joins:
        assert node.name in titles
    for op in {n.op for n in joins}:
        assert JOINS[op] in svg
    assert list(tmp_path.iterdir()) == [out]  # no temporary left beside it


@needs_dot
@pytest.mark.parametrize("file,arch", ZOO, ids=[a for _, a in ZOO])
def test_every_spec_renders_svg_rolled_up(tmp_path, file, arch):
    net = _net(file, arch)
    svg = render(draw(net, depth=1), tmp_path / f"{arch}.svg").read_text(encoding="utf-8")
    titles = _titles(svg)
    for row in net.stats().rollup(1):
        assert row.name in titles, row.name
    assert not any(t.startswith("cluster_") for t in titles)  # depth 1: nothing left to nest


@needs_dot
def test_resnet50_at_depth_1_and_2(tmp_path):
    net = _net("resnet50.arch")
    svg1 = render(draw(net, depth=1), tmp_path / "d1.svg").read_text(encoding="utf-8")
    t1 = _titles(svg1)
    assert {"conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"} <= t1
    assert "layer1.0.conv1" not in svg1 and "⊕" not in svg1  # blocks are collapsed

    svg2 = render(draw(net, depth=2), tmp_path / "d2.svg").read_text(encoding="utf-8")
    t2 = _titles(svg2)
    assert {"layer1.0", "layer1.2", "layer3.5", "layer4.2"} <= t2
    assert {"cluster_layer1", "cluster_layer4"} <= t2 and "cluster_layer1.0" not in t2


@needs_dot
def test_resnet50_full_depth_shows_layers_joins_and_clusters(tmp_path):
    net = _net("resnet50.arch")
    svg = render(draw(net), tmp_path / "r.svg").read_text(encoding="utf-8")
    titles = _titles(svg)
    assert {"layer1.0.conv1", "layer1.0.downsample.0", "layer4.2.conv3"} <= titles
    assert {"cluster_layer1", "cluster_layer1.0", "cluster_layer4.2"} <= titles
    assert svg.count("⊕") == 16  # one residual join per bottleneck block
    assert "64×56×56" in svg  # edges carry shapes


@needs_dot
def test_googlenet_concats(tmp_path):
    net = _net("googlenet.arch")
    svg = render(draw(net), tmp_path / "g.svg").read_text(encoding="utf-8")
    titles = _titles(svg)
    assert {"inception_3a.conv1x1", "inception_5b.pool_proj", "cluster_inception_4e"} <= titles
    concats = [n.name for n in net.graph.nodes if n.op == "concat"]
    assert len(concats) == 9 and set(concats) <= titles


@needs_dot
@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"),
                                          (".svg", b"<?xml")])
def test_binary_formats(tmp_path, suffix, magic):
    out = render(draw(_net("lenet5.arch")), tmp_path / f"lenet{suffix}")
    assert out.read_bytes().startswith(magic)


# ---------------------------------------------------------------- what the drawing says

def test_layer_boxes_group_attached_norm_and_activation():
    src = draw(_net("resnet50.arch")).source
    assert "<B>conv1</B>: conv 7×7/2, 64 + bn + relu" in src
    assert "9.54K params · 118.01M MACs" in src  # human-readable counts
    assert "<B>conv2</B>: conv 3×3, 512 + bn + relu" in src and "2.36M params" in src
    assert '"layer1.0.bn1"' not in src and '"bn1"' not in src  # no box of its own
    assert "shape=circle" in src and "⊕" in src
    assert "subgraph cluster_layer1 {" in src and 'subgraph "cluster_layer1.0" {' in src
    assert "rankdir=TB" in src


def test_block_boxes_sum_their_layers():
    net = _net("resnet50.arch")
    src = draw(net, depth=1).source
    layer1 = next(r for r in net.stats().rollup(1) if r.name == "layer1")
    from archdsl.numfmt import human
    assert f"{human(layer1.params)} params" in src
    assert "10 conv · 3 add · 3 relu" in src
    assert "cluster_" not in src


def test_joins_are_small_distinct_nodes():
    src = draw(_net("googlenet.arch")).source
    assert src.count('[label=concat') == 9
    src = draw(load("arch se\ninput 8x4x4\nconv3-8\ngate { gap; conv1-2; relu; conv1-8; "
                    "sigmoid }\nadd { conv3-8 | }\n")).source
    assert "⊗" in src and "⊕" in src


def test_input_and_output_nodes():
    src = draw(_net("lenet5.arch")).source
    assert "<B>input</B>" in src and "<B>output</B>" in src and "1×32×32" in src
    assert "shape=ellipse" in src


def test_output_node_does_not_clash_with_a_layer_named_output():
    src = draw(load("arch a\ninput 3x8x8\noutput: conv3-4\n")).source
    assert "\toutput [" in src and "\toutput_ [" in src and "output -> output_" in src


def test_flops_convention():
    src = draw(_net("lenet5.arch"), conventions=Conventions(count="flops")).source
    assert "FLOPs" in src and "MACs" not in src


def test_draw_takes_a_graph_and_checks_its_arguments():
    net = _net("lenet5.arch")
    assert draw(net.graph).source == draw(net).source
    with pytest.raises(TypeError):
        draw("specs/lenet5.arch")
    with pytest.raises(UsageError, match="depth"):
        draw(net, depth=0)


# ---------------------------------------------------------------- render: formats, errors

def _no_dot(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_dot_source_needs_no_graphviz_binary(tmp_path, monkeypatch):
    _no_dot(monkeypatch, tmp_path)
    for suffix in (".dot", ".gv"):
        out = render(draw(_net("resnet50.arch")), tmp_path / f"resnet50{suffix}")
        text = out.read_text(encoding="utf-8")
        assert text.startswith("digraph resnet50 {") and '"layer1.0.conv1"' in text


def test_unknown_suffix(tmp_path):
    with pytest.raises(UsageError) as exc:
        render(draw(_net("lenet5.arch")), tmp_path / "lenet.jpeg")
    assert ".jpeg" in exc.value.message and ".svg" in (exc.value.hint or "")
    with pytest.raises(UsageError, match="unknown suffix"):
        render(draw(_net("lenet5.arch")), tmp_path / "lenet")
    assert list(tmp_path.iterdir()) == []


def test_missing_dot_on_path(tmp_path, monkeypatch):
    _no_dot(monkeypatch, tmp_path)
    with pytest.raises(UsageError) as exc:
        render(draw(_net("lenet5.arch")), tmp_path / "lenet.svg")
    assert "`dot`" in exc.value.message
    assert "apt-get install graphviz" in exc.value.hint and ".dot" in exc.value.hint
    assert "install Graphviz" in str(exc.value)


def test_missing_dot_reported_by_graphviz(tmp_path, monkeypatch):
    def pipe(self, *args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot", "-Tpng"])
    monkeypatch.setattr(graphviz.Digraph, "pipe", pipe)
    with pytest.raises(UsageError, match="needs Graphviz's `dot`"):
        render(draw(_net("lenet5.arch")), tmp_path / "lenet.png")


def test_failed_render_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "net.svg"
    target.write_text("old drawing")
    with monkeypatch.context() as m:  # no dot
        _no_dot(m, tmp_path)
        with pytest.raises(UsageError):
            render(draw(_net("lenet5.arch")), target)
    broken = graphviz.Digraph()
    broken.body.append("a -> ;;; {{{\n")  # dot rejects it
    if HAVE_DOT:
        with pytest.raises(UsageError, match="failed"):
            render(broken, target)

    def pipe(self, *args, **kwargs):  # fails while writing: the temporary goes, not the file
        return b"<svg/>"
    monkeypatch.setattr(graphviz.Digraph, "pipe", pipe)
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: (_ for _ in ()).throw(
        OSError("disk full")))
    with pytest.raises(OSError):
        render(draw(_net("lenet5.arch")), target)
    assert target.read_text() == "old drawing"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "empty-bin") == ["net.svg"]
