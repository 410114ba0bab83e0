"""A CPU build that runs its network's trunk a few images at a time (`chunks.py`,
`lower.build_module`'s `chunk`): where the trunk ends, when a build takes chunks, and that
the chunked network computes what the whole-batch one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.backends.tvm.build import make_target  # noqa: E402
from archdsl.backends.tvm.chunks import chunk_images  # noqa: E402
from archdsl.backends.tvm.lower import TRUNK_FUNC, trunk_end  # noqa: E402
from tests.backends.test_tvm import EVERY_OP, _assert_close, _run_torch, _torch_reference  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _end(spec: str) -> str | None:
    graph = archdsl.load(spec).graph
    nodes = [n for n in graph.nodes if n.op != "input"]
    end = trunk_end(graph)
    return None if end < 0 else nodes[end].name


def test_the_trunk_ends_before_the_first_fc_where_nothing_earlier_is_read_after():
    # a residual's input is read by its add: the trunk cannot end inside it
    assert _end("""
arch a
input 3x8x8
c1: conv3-8
r: residual { c2: conv3-8; c3: conv3-8 act=none }
p: gap
f: FC-4
""") == "p"
    # the input itself is read late: no node before the add is the trunk's end
    assert _end("""
arch b
input 8x8x8
j: add { c1: conv3-8 | }
f: FC-4
""") == "j"
    # no FC: the whole network
    assert _end("""
arch c
input 3x8x8
c1: conv3-8
g: gap
""") == "g"
    # an FC first: no trunk
    assert _end("""
arch d
input 16
f1: FC-8
f2: FC-4
""") is None


def test_a_trunk_in_chunks_agrees_with_pytorch():
    """Every op (EVERY_OP's trunk ends at its flatten, before its FCs) lowered for two images
    a call, in a batch of four: the output is the whole batch's, against PyTorch."""
    arch = archdsl.load(EVERY_OP)
    model, state = _torch_reference(arch)
    compiled = backend.compile(arch.graph, "llvm", weights=state, batch=4, chunk=2)
    assert compiled.meta["chunk"] == 2
    x = np.random.default_rng(1).standard_normal(compiled.input_shape).astype(np.float32)
    _assert_close(compiled(x), _run_torch(model, x))
    # the images are not mixed up between the chunks
    ref = _run_torch(model, x)
    assert np.abs(ref[:2] - ref[2:]).max() > 1e-2 * np.abs(ref).max()


def test_a_chunked_module_calls_its_trunk_once_per_chunk():
    graph = archdsl.load(SPECS / "mobilenet_v1.arch", resolution=32, alpha=0.25).graph
    mod = backend.build_module(graph, batch=6, chunk=2)
    calls = []
    tvm.relax.analysis.post_order_visit(
        mod["main"], lambda e: calls.append(e) if isinstance(e, tvm.relax.Call)
        and isinstance(e.op, tvm.ir.GlobalVar) and e.op.name_hint == TRUNK_FUNC else None)
    assert len(calls) == 3
    assert tuple(mod[TRUNK_FUNC].params[0].ty.shape) == (2, 3, 32, 32)
    assert "archdsl_trunk" not in backend.build_module(graph, batch=6).get_global_vars()
    with pytest.raises(ValueError, match="do not divide"):
        backend.build_module(graph, batch=6, chunk=4)
    for bad in ("2", 2.0, True):
        with pytest.raises(ValueError, match="whole number"):
            backend.compile(graph, "llvm", batch=6, chunk=bad)
    fc_first = archdsl.load("arch d\ninput 16\nf1: FC-8\n").graph
    with pytest.raises(ValueError, match="no trunk"):
        backend.build_module(fc_first, batch=4, chunk=2)


def _target(mcpu: str, cores: int):
    return make_target({"kind": "llvm", "mcpu": mcpu, "num-cores": cores})


@pytest.mark.parametrize("mcpu", ["emeraldrapids", "znver4", "znver3"])
def test_depthwise_separable_trunks_run_an_image_at_a_time(mcpu):
    """MobileNetV2 and MobileNet v1 (their activations outweigh their weights) an image at a
    time in a build for one thread, and for two where they share the images evenly
    (`trunk_threads`: each takes its own) — with Zen 3's 512 KB of L2 too, where few of their
    outputs fit in half of it but a chunk's stay in L3; not at batch 1, not three images on
    two threads, not for a number of threads unknown, not ResNet-18, ResNet-50 or VGG-16
    (weights outweigh what stays in cache), never a GPU build."""
    v2 = archdsl.load(SPECS / "mobilenet_v2.arch").graph
    assert chunk_images(archdsl.load(SPECS / "mobilenet_v1.arch").graph, 32,
                        _target(mcpu, 2), 4) == 1
    assert chunk_images(v2, 32, _target(mcpu, 1), 4) == 1
    assert chunk_images(v2, 3, _target(mcpu, 1), 4) == 1
    assert chunk_images(v2, 1, _target(mcpu, 1), 4) is None
    assert chunk_images(v2, 32, _target(mcpu, 2), 4) == 1
    assert chunk_images(v2, 3, _target(mcpu, 2), 4) is None
    assert chunk_images(v2, 32, make_target({"kind": "llvm", "mcpu": mcpu}), 4) is None
    for spec in ("resnet18.arch", "resnet50.arch", "vgg_d.arch"):
        for threads in (1, 2):
            assert chunk_images(archdsl.load(SPECS / spec).graph, 32, _target(mcpu, threads),
                                4) is None
    cuda = make_target({"kind": "cuda", "arch": "sm_90"})
    assert chunk_images(v2, 32, cuda, 4) is None


SMALL = """
arch small
input 3x32x32
conv3-8
dwconv3
conv1-8
gap
FC-10
"""


def test_compile_says_in_its_manifest_how_many_images_a_trunk_call_takes(tmp_path):
    """`archdsl compile --batch 4` for one thread: the manifest's `chunk` is 1, and the
    library computes what the batch run whole does; at batch 1 there is none."""
    import json

    from typer.testing import CliRunner

    from archdsl.cli import app
    spec = tmp_path / "small.arch"
    spec.write_text(SMALL)
    target = json.dumps({"kind": "llvm", "mcpu": "haswell", "num-cores": 1})
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32), np.float32)
    whole = backend.compile(archdsl.load(SMALL).graph, target, batch=4, chunk=4)
    assert "chunk" not in whole.meta
    for batch, chunk in ((4, 1), (1, None)):
        lib = tmp_path / f"b{batch}.so"
        result = CliRunner().invoke(app, ["compile", str(spec), "-o", str(lib), "--batch",
                                          str(batch), "--target", target])
        assert result.exit_code == 0, result.output
        assert json.loads(lib.with_name(lib.name + ".json").read_text())["chunk"] == chunk
        _assert_close(backend.Compiled.load(lib)(x[:batch]), whole(x)[:batch], rel=1e-5)


def test_compile_chunk_option_refuses_what_a_build_cannot_take(tmp_path):
    """`--chunk` that does not divide the batch, on a graph without a trunk, or for a GPU:
    a user's error, no traceback, no library; `--chunk 2` at batch 4 runs in two chunks."""
    import json

    from typer.testing import CliRunner

    from archdsl.cli import app
    spec = tmp_path / "small.arch"
    spec.write_text(SMALL)
    fc_first = tmp_path / "fc.arch"
    fc_first.write_text("arch fc\ninput 16\nf1: FC-8\nf2: FC-4\n")
    for path, args, told in ((spec, ["--batch", "4", "--chunk", "3"], "do not divide"),
                             (fc_first, ["--batch", "4", "--chunk", "2"], "no trunk"),
                             (spec, ["--batch", "4", "--chunk", "2", "--target", "cuda"],
                              "CPU build")):
        lib = tmp_path / "bad.so"
        result = CliRunner().invoke(app, ["compile", str(path), "-o", str(lib), *args])
        assert result.exit_code == 1 and told in result.output, result.output
        assert "Traceback" not in result.output and not lib.exists()
    lib = tmp_path / "two.so"
    result = CliRunner().invoke(app, ["compile", str(spec), "-o", str(lib), "--batch", "4",
                                      "--chunk", "2", "--target", json.dumps(
                                          {"kind": "llvm", "mcpu": "haswell", "num-cores": 2})])
    assert result.exit_code == 0, result.output
    manifest = json.loads(lib.with_name(lib.name + ".json").read_text())
    assert manifest["chunk"] == 2 and manifest["chunk_threads"] == 2
