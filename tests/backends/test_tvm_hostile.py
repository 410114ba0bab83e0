"""`archdsl compile` and `archdsl run` given hostile or broken input (issue #13): every failure is
an error message (exit 1), no traceback, nothing written, and a good old artifact stays intact.
A library is code: `run` loads one only if it matches its manifest."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

tvm = pytest.importorskip("tvm")
np = pytest.importorskip("numpy")

from typer.testing import CliRunner  # noqa: E402

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.backends.tvm.library import LibraryError  # noqa: E402
from archdsl.cli import app  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NET = "arch net\ninput 3x8x8\nc1: conv3-4 act=relu\ngap\nfc: FC-3\n"


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output and "internal error" not in result.output, \
        result.output
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A spec, and the library and manifest compiled from it (the good old artifact)."""
    folder = tmp_path_factory.mktemp("built")
    spec = folder / "net.arch"
    spec.write_text(NET)
    result = invoke("compile", spec, "-o", folder / "net.so")
    assert result.exit_code == 0, result.output
    return spec, folder / "net.so"


@pytest.fixture
def work(built, tmp_path):
    """A copy of the spec, the library and its manifest in an empty folder."""
    spec, lib = built
    for path in (spec, lib, lib.with_name("net.so.json")):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def fails(folder: Path, *args, message: str) -> None:
    """The command fails with `message`, and the folder is as it was."""
    before = snapshot(folder)
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert message in result.output, result.output
    assert snapshot(folder) == before


# ---------------------------------------------------------------- compile: checked before compiling

def test_output_onto_the_spec_itself_is_refused(work):
    spec = work / "net.arch"
    fails(work, "compile", spec, "-o", spec, message="is one of this command's inputs")
    (work / "lib.arch").write_text("block b { relu }\n")
    spec.write_text('include "lib.arch"\n' + NET)
    fails(work, "compile", spec, "-o", work / "lib.arch",
          message="is one of this command's inputs")  # an include is an input too


def test_output_onto_the_weights_is_refused(work):
    weights = work / "w.safetensors"
    weights.write_bytes(b"not read: refused before")
    fails(work, "compile", work / "net.arch", "--weights", weights, "-o", weights,
          message="is one of this command's inputs")


def test_output_onto_a_link_or_a_device_is_refused(work, tmp_path_factory):
    victim = tmp_path_factory.mktemp("elsewhere") / "victim"
    victim.write_text("precious")
    (work / "link.so").symlink_to(victim)
    fails(work, "compile", work / "net.arch", "-o", work / "link.so", message="symbolic link")
    assert victim.read_text() == "precious"
    (work / "m.so.json").symlink_to(victim)  # the manifest's path is checked as well
    fails(work, "compile", work / "net.arch", "-o", work / "m.so", message="symbolic link")
    fails(work, "compile", work / "net.arch", "-o", "/dev/null", message="not a regular file")
    os.mkfifo(work / "fifo.so")
    fails(work, "compile", work / "net.arch", "-o", work / "fifo.so",
          message="not a regular file")


def test_output_under_a_file_or_in_a_read_only_folder(work):
    fails(work, "compile", work / "net.arch", "-o", work / "net.arch" / "x.so",
          message="is a file, not a folder")
    if os.geteuid() == 0:
        pytest.skip("root writes in read-only folders")
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        fails(work, "compile", work / "net.arch", "-o", ro / "x.so", message="not writable")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("target, message", [
    ("bogus", 'Target kind "bogus" is not defined'),
    ("cuda:sm_xx", "`sm_xx` is not a CUDA architecture"),
    ('{"kind": "llvm", "mcpu": "notacpu"}', "LLVM does not know the CPU `notacpu`"),
    ("c", "archdsl builds for llvm and cuda targets"),
])
def test_a_bad_target_is_refused_before_compiling(work, target, message):
    fails(work, "compile", work / "net.arch", "-t", target, "-o", work / "net.so",
          message=message)


def test_weights_that_do_not_fit(work):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    state = archdsl.load(work / "net.arch").to_torch().state_dict()
    wrong = work / "wrong.safetensors"
    save_file({**state, "fc.weight": torch.zeros(5, 4)}, str(wrong))
    fails(work, "compile", work / "net.arch", "--weights", wrong, "-o", work / "net.so",
          message="wrong shape: fc.weight")
    ints = work / "ints.safetensors"
    save_file({k: v.to(torch.int64) for k, v in state.items()}, str(ints))
    fails(work, "compile", work / "net.arch", "--weights", ints, "-o", work / "net.so",
          message="not floating point")
    (work / "junk.safetensors").write_bytes(b"\x00" * 64)
    fails(work, "compile", work / "net.arch", "--weights", work / "junk.safetensors", "-o",
          work / "net.so", message="cannot read weights")
    os.mkfifo(work / "fifo.safetensors")
    fails(work, "compile", work / "net.arch", "--weights", work / "fifo.safetensors", "-o",
          work / "net.so", message="FIFO")


def test_too_big_for_this_machine_is_refused_before_allocating(work):
    (work / "big.arch").write_text("arch big\ninput 3x8x8\nFC-{2**30}\nFC-{2**20}\n")
    fails(work, "compile", work / "big.arch", "-o", work / "big.so",
          message="needs at least")


def test_a_failing_link_step_keeps_the_old_pair(work, monkeypatch):
    old = snapshot(work)

    def broken(self, path, **kwargs):
        Path(path).write_bytes(b"half a library")
        raise RuntimeError("Compilation error:\ncc: fatal error: something")

    monkeypatch.setattr(tvm.runtime.Module, "export_library", broken)
    fails(work, "compile", work / "net.arch", "-o", work / "net.so",
          message="linking the library failed")
    assert snapshot(work) == old


def test_the_api_refuses_what_it_would_build_wrong():
    graph = archdsl.load(NET).graph
    with pytest.raises(ValueError, match="float32 or float16"):
        backend.compile(graph, dtype="int8")
    for batch in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch"):
            backend.compile(graph, batch=batch)
    compiled = backend.compile(graph, batch=np.int64(2))
    assert compiled.input_shape == (2, 3, 8, 8)
    for x in (np.zeros((2, 3, 8, 8), np.int64), np.zeros((2, 3, 8, 8), bool),
              np.zeros((2, 3, 8, 8), np.complex64)):
        with pytest.raises(ValueError, match="floating-point input"):
            compiled(x)


# ---------------------------------------------------------------- the manifest

def test_the_manifest_covers_the_includes_and_the_library(work):
    (work / "lib.arch").write_text("block b(c) { conv3-{c} act=relu }\n")
    (work / "main.arch").write_text('include "lib.arch"\narch m\ninput 3x8x8\nb(4)\ngap\n')
    assert invoke("compile", work / "main.arch", "-o", work / "m.so").exit_code == 0
    first = json.loads((work / "m.so.json").read_text())
    assert sorted(Path(p).name for p in first["spec_files"]) == ["lib.arch", "main.arch"]
    (work / "lib.arch").write_text("block b(c) { conv3-{c} act=relu6 }\n")  # only the include
    assert invoke("compile", work / "main.arch", "-o", work / "m.so").exit_code == 0
    second = json.loads((work / "m.so.json").read_text())
    assert second["spec_sha256"] != first["spec_sha256"]
    assert second["library_sha256"] != first["library_sha256"]


# ---------------------------------------------------------------- run: a library is code

def test_run_checks_the_library_against_its_manifest(work):
    lib = work / "net.so"
    assert invoke("run", lib).exit_code == 0
    data = lib.read_bytes()
    lib.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit
    fails(work, "run", lib, message="does not match its manifest")
    lib.write_bytes(data[: len(data) // 2])  # truncated: was SIGBUS
    fails(work, "run", lib, message="does not match its manifest")
    with pytest.raises(LibraryError, match="truncated"):
        backend.Compiled.load(lib, verify=False)
    lib.write_bytes(data)
    (work / "net.so.json").unlink()
    fails(work, "run", lib, message="its manifest net.so.json cannot be read")
    (work / "net.so.json").write_text("[]")
    fails(work, "run", lib, message="not an archdsl manifest")


def test_run_on_what_is_not_a_library(work):
    fails(work, "run", work, message="is a folder")
    fails(work, "run", work / "missing.so", message="cannot load")
    libz = next((p for p in (Path("/lib/x86_64-linux-gnu/libz.so.1"),
                             Path("/usr/lib/x86_64-linux-gnu/libz.so.1")) if p.exists()), None)
    if libz is None:
        pytest.skip("no libz to stand for a foreign library")
    shutil.copy(libz, work / "z.so")
    fails(work, "run", work / "z.so", message="cannot be read")  # no manifest: never loaded
    import hashlib
    digest = hashlib.sha256((work / "z.so").read_bytes()).hexdigest()
    (work / "z.so.json").write_text(json.dumps({"library_sha256": digest}))
    fails(work, "run", work / "z.so", message="not one written by archdsl compile")


@pytest.mark.parametrize("make, message", [
    (lambda p: np.savez(p, x=np.zeros((1, 3, 8, 8), np.float32)), ".npz archive"),
    (lambda p: np.save(p, np.array(["a", "b"])), "<U1 values"),
    (lambda p: np.save(p, np.zeros((1, 3, 8, 8), np.int64)), "int64 values"),
    (lambda p: np.save(p, np.zeros((1, 3, 8, 8), np.complex64)), "complex64 values"),
    (lambda p: np.save(p, np.zeros((1, 3, 4, 4), np.float32)), "has shape [1, 3, 4, 4]"),
    (lambda p: p.write_bytes(b"plain text"), "not a .npy file"),
])
def test_run_refuses_inputs_it_would_cast_or_misread(work, make, message):
    path = work / "x.npy"
    make(path)
    if not path.exists():  # np.savez adds .npz
        path.with_suffix(".npy.npz").rename(path)
    fails(work, "run", work / "net.so", "-i", path, message=message)


def test_a_npy_header_claiming_ten_billion_floats(work):
    """np.load would try to allocate 40 GB; the header is checked against the file first."""
    path = work / "huge.npy"
    np.save(path, np.zeros((1, 3, 8, 8), np.float32))
    data = path.read_bytes().replace(b"(1, 3, 8, 8)", b"(1, 3, 100000, 33334)", 1)
    path.write_bytes(data)
    fails(work, "run", work / "net.so", "-i", path, message="has shape [1, 3, 100000, 33334]")
    with pytest.raises(ValueError, match="bytes where its header says"):
        backend.runtime.read_input(path, (1, 3, 100000, 33334))


# ---------------------------------------------------------------- signals

def test_sigterm_while_writing_leaves_nothing_behind(work, tmp_path_factory, monkeypatch):
    """SIGTERM unwinds like Ctrl-C (cli.main installs the handler; it is installed here as
    main would): the half-written library (.NAME.part.so), the linker's objects and their
    folder are removed; the old pair stays."""
    import tempfile

    from archdsl import cli
    tmp = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    old = snapshot(work)

    def export(self, path, **kwargs):
        Path(path).write_bytes(b"half")
        (Path(kwargs["workspace_dir"]) / "lib0.o").write_bytes(b"obj")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(tvm.runtime.Module, "export_library", export)
    saved = signal.signal(signal.SIGTERM, cli._terminate)
    try:
        result = CliRunner().invoke(app, ["compile", str(work / "net.arch"), "-o",
                                          str(work / "net.so")])
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert result.exit_code == 128 + signal.SIGTERM and "Traceback" not in result.output
    assert snapshot(work) == old and sorted(os.listdir(work)) == sorted(old)
    assert os.listdir(tmp) == []
