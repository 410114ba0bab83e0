"""User-defined ops (archdsl.plugins): registered from Python, from a plugin module or file, or
from an installed `archdsl.ops` entry point named by the spec; used like built-in ops (counts,
attributes, norm=/act=, the canonical form); and never loaded from anywhere a spec chooses."""

from __future__ import annotations

import sys
import textwrap

import pytest

import archdsl
from archdsl import AttrSpec, OpDef, OpShapeError, PluginError, register_op, unregister_op
from archdsl.errors import ArchErrors
from archdsl.formatter import format_graph
from archdsl.plugins import _entry_points, load_plugin


def _shape(a, ins):
    if ins[0][0] % a["parts"]:
        raise OpShapeError(f"{a['parts']} parts must divide {ins[0][0]} channels")
    return ins[0]


# A per-channel learned scale in `parts` groups (a made-up op, to test the machinery).
SCALER = OpDef("scaler", "scale", "a learned scale per group of channels: scaler(2)",
               attrs={"parts": AttrSpec("int", 1, 1)}, positional=("parts",), shape=_shape,
               weights=lambda a, ins, out: a["parts"],
               tensors=lambda a, ins, out: {"weight": (a["parts"],)})
SWISHY = OpDef("swishy", "act", "x·sigmoid(beta·x)", attrs={"beta": AttrSpec("float", 1.0)},
               positional=("beta",))


@pytest.fixture
def ops():
    registered = [register_op(SCALER, aliases=["scale_by"]), register_op(SWISHY)]
    yield registered
    for op in registered:
        unregister_op(op.name)


def test_a_registered_op_is_written_counted_and_formatted(ops):
    net = archdsl.load("arch a\ninput 4x3x3\nconv1-4 act=swishy beta=2\ns: scaler(2)\n"
                       "scale_by(4)\n")
    nodes = {n.name: n for n in net.graph.nodes}
    assert nodes["1"].op == "swishy" and nodes["1"].attrs == {"beta": 2.0}
    assert nodes["s"].attrs == {"parts": 2} and nodes["2"].op == "scaler"
    rows = {r.name: r for r in net.stats().rows}
    assert rows["s"].weights == rows["s"].params == 2 and rows["s"].units == 36
    assert archdsl.load(format_graph(net.graph)).graph.signature() == net.graph.signature()


def test_errors_from_a_user_declaration_are_located(ops):
    with pytest.raises(ArchErrors, match="3 parts must divide 4 channels") as info:
        archdsl.load("arch a\ninput 4x3x3\nscaler(3)\n")
    assert info.value.errors[0].span.line == 3


def test_unregistered_it_is_unknown_again():
    with pytest.raises(ArchErrors, match="unknown op or block `scaler`"):
        archdsl.load("arch a\ninput 4x3x3\nscaler(2)\n")


@pytest.mark.parametrize("op,message", [
    (OpDef("conv", "conv", "x"), "already an op"),
    (OpDef("silu", "act", "x"), "already an op"),
    (OpDef("bad name", "act", "x"), "not an op name"),
    (OpDef("thing", "gizmo", "x"), "category `gizmo`"),
    (OpDef("thing", "act", "x", attrs={"a": AttrSpec("complex")}), "type `complex`"),
])
def test_bad_declarations_are_refused(op, message):
    with pytest.raises(PluginError, match=message):
        register_op(op)
    assert "thing" not in archdsl.OPS


def test_built_in_ops_cannot_be_replaced_or_removed(ops):
    with pytest.raises(PluginError, match="already an op"):
        register_op(OpDef("relu", "act", "mine"), replace=True)
    with pytest.raises(PluginError, match="built-in"):
        unregister_op("relu")
    assert register_op(SWISHY, replace=True).name == "swishy"  # a user op may be replaced


PLUGIN = """
from archdsl import OpDef, register_op
register_op(OpDef("plugged", "act", "an activation from a plugin file"))
"""


def test_load_plugin_from_a_file_and_a_module(tmp_path, monkeypatch):
    (tmp_path / "my_ops.py").write_text(PLUGIN)
    try:
        assert load_plugin(str(tmp_path / "my_ops.py")) == ["plugged"]
        unregister_op("plugged")
        monkeypatch.syspath_prepend(str(tmp_path))
        assert load_plugin("my_ops") == ["plugged"]
    finally:
        unregister_op("plugged")
        sys.modules.pop("my_ops", None)
    with pytest.raises(PluginError, match="failed to load: ModuleNotFoundError"):
        load_plugin("no_such_plugin_module")
    with pytest.raises(PluginError, match="no plugin file"):
        load_plugin(str(tmp_path / "missing.py"))


def _install(tmp_path, monkeypatch, entry: str, module: str) -> None:
    """A package installed as pip would: its module and a dist-info with entry points."""
    (tmp_path / "fancy_ops.py").write_text(textwrap.dedent(module))
    info = tmp_path / "fancy_ops-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-ops\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[archdsl.ops]\n{entry}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _entry_points.cache_clear()


@pytest.fixture
def cleanup():
    yield
    for name in ("fancy", "fancier"):
        if name in archdsl.OPS:
            unregister_op(name)
    sys.modules.pop("fancy_ops", None)
    _entry_points.cache_clear()


def test_an_installed_entry_point_is_loaded_when_a_spec_names_it(tmp_path, monkeypatch,
                                                                 cleanup):
    _install(tmp_path, monkeypatch, "fancy = fancy_ops:FANCY", """
        from archdsl import OpDef
        FANCY = OpDef("fancy", "act", "an installed activation")
        """)
    assert "fancy" not in archdsl.OPS  # nothing is loaded before a spec asks
    net = archdsl.load("arch a\ninput 4x3x3\nconv1-4 act=fancy\nfancy\n")
    assert [n.op for n in net.graph.nodes[1:]] == ["conv", "fancy", "fancy"]


def test_an_entry_point_may_register_several_ops(tmp_path, monkeypatch, cleanup):
    _install(tmp_path, monkeypatch, "fancier = fancy_ops:register", """
        from archdsl import OpDef, register_op
        def register():
            register_op(OpDef("fancier", "act", "one"))
            register_op(OpDef("fancy", "act", "two"))
        """)
    assert [n.op for n in archdsl.load("arch a\ninput 4x3x3\nfancier\nfancy\n")
            .graph.nodes[1:]] == ["fancier", "fancy"]


def test_a_failing_entry_point_is_a_located_error(tmp_path, monkeypatch, cleanup):
    _install(tmp_path, monkeypatch, "fancy = fancy_ops:FANCY", "raise RuntimeError('boom')\n")
    with pytest.raises(ArchErrors, match="installed entry point fancy_ops:FANCY") as info:
        archdsl.load("arch a\ninput 4x3x3\nfancy\n")
    assert "RuntimeError: boom" in info.value.errors[0].message
    assert info.value.errors[0].span.line == 3


def test_a_spec_cannot_import_a_module_by_itself(tmp_path, monkeypatch, cleanup):
    # a module on the path that is no installed entry point is never imported for a name
    (tmp_path / "sneaky.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for text in ("arch a\ninput 4x3x3\nsneaky\n", "arch a\ninput 4x3x3\nconv1-4 act=sneaky\n",
                 'include "sneaky.py"\narch a\ninput 4x3x3\nrelu\n'):
        with pytest.raises(ArchErrors):
            archdsl.load(text)
    assert "sneaky" not in sys.modules
