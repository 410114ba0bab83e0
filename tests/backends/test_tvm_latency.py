"""`archdsl stats --latency`: measured latency per point, with builds cached on disk and
loaded only when they verify (backends/tvm/build_cache.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

tvm = pytest.importorskip("tvm")

from typer.testing import CliRunner  # noqa: E402

from archdsl.backends.tvm import build  # noqa: E402
from archdsl.cli import app  # noqa: E402

SPEC = """arch tiny(width = 4, resolution = 16)
input 3x{resolution}x{resolution}
defaults act=relu
conv3-{width}; conv3-{2*width}/2; conv3-{2*width}
gap; FC-10
"""


def count_builds(monkeypatch) -> list[int]:
    """The widths compiled by `build.compile` from now on (the builds the cache did not
    spare)."""
    made: list[int] = []
    real = build.compile

    def counted(graph, *args, **kwargs):
        made.append(graph.settings["width"])
        return real(graph, *args, **kwargs)
    monkeypatch.setattr(build, "compile", counted)
    return made


@pytest.fixture
def builds(monkeypatch):
    return count_builds(monkeypatch)


def stats(tmp_path: Path, *args, widths: str = "4,8"):
    spec = tmp_path / "tiny.arch"
    spec.write_text(SPEC)
    return CliRunner().invoke(app, ["stats", str(spec), "--set", f"width={widths}",
                                    "--latency", "llvm", "--runs", "3", "--cache-dir",
                                    str(tmp_path / "cache"), *args])


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The first run, into an empty cache: its output and the builds it made."""
    folder = tmp_path_factory.mktemp("built")
    with pytest.MonkeyPatch.context() as monkeypatch:
        made = count_builds(monkeypatch)
        result = stats(folder)
    return folder, result, made


@pytest.fixture
def built(first_run) -> Path:
    """A cache with both points built, for the tests that start from one (copied: same key)."""
    return first_run[0] / "cache"


def copy_of(built: Path, tmp_path: Path) -> Path:
    shutil.copytree(built, tmp_path / "cache")
    return tmp_path


def latencies(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    docs = json.loads(result.stdout)
    return [doc["latency"] for doc in (docs if isinstance(docs, list) else [docs])]


def entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").glob("*.so"))


def test_column_values_and_cached_builds_reused(first_run, builds):
    tmp_path, result, made = first_run
    assert result.exit_code == 0, result.output
    assert "Latency ms" in result.stdout and "median of at least 3 timed" in result.stdout
    assert "[2/2] tiny (width=8): compiling" in result.stderr  # the progress lines
    assert made == [4, 8]
    mtimes = [p.stat().st_mtime_ns for p in entries(tmp_path)]
    first = latencies(stats(tmp_path, "-f", "json"))
    assert builds == []  # the second run compiled nothing
    assert [x["cached"] for x in first] == [True, True]
    assert all(x["ms"] > 0 and x["min_ms"] <= x["ms"] and x["min_runs"] == 3 for x in first)
    # a network of microseconds is timed until its runs fill MIN_SECONDS: many more than 3
    assert all(x["runs"] > 3 for x in first)
    assert first[0]["target"].startswith("llvm -mcpu=")
    assert len(mtimes) == 2
    assert "latency_ms" in stats(tmp_path, "-f", "csv").stdout.splitlines()[0]
    assert [p.stat().st_mtime_ns for p in entries(tmp_path)] == mtimes
    assert builds == []


def _entry(tmp_path: Path, width: int) -> Path:
    for lib in entries(tmp_path):
        if json.loads(Path(f"{lib}.json").read_text())["settings"]["width"] == width:
            return lib
    raise AssertionError(f"no entry for width {width}")


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_or_foreign_entries_are_rebuilt_not_loaded(built, tmp_path, builds):
    copy_of(built, tmp_path)
    lib = _entry(tmp_path, 8)
    _flip_byte(lib, lib.stat().st_size // 2)  # the library changed: its SHA-256 differs
    # a manifest rewritten to vouch for another library: its seal no longer verifies
    manifest = Path(f"{_entry(tmp_path, 4)}.json")
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "library_sha256": "0" * 64}))
    assert [x["cached"] for x in latencies(stats(tmp_path, "-f", "json"))] == [False, False]
    assert builds == [4, 8]
    assert [x["cached"] for x in latencies(stats(tmp_path, "-f", "json"))] == [True, True]
    assert builds == [4, 8]  # the rewritten entries verify


def test_entries_of_another_cache_are_not_loaded(built, tmp_path, builds):
    import archdsl
    from archdsl.backends.tvm.build_cache import BuildCache, cache_key
    copy_of(built, tmp_path)
    (tmp_path / "tiny.arch").write_text(SPEC)
    graph = archdsl.load(tmp_path / "tiny.arch", width=4).graph
    key = cache_key(graph, build.make_target("llvm"), 1, "float32")
    path = BuildCache(tmp_path / "cache").path(graph.name, key)
    assert BuildCache(tmp_path / "cache").load(path, key) is not None
    # sealed here, but for another build (a stale entry: another TVM, other sources...)
    assert BuildCache(tmp_path / "cache").load(path, {**key, "tvm": "0.0"}) is None
    (tmp_path / "cache" / "secret").unlink()  # the entries were sealed under another key
    assert BuildCache(tmp_path / "cache").load(path, key) is None
    assert builds == []


def test_the_least_recently_used_entries_go_past_the_cache_limit(built, tmp_path, builds,
                                                                  monkeypatch):
    from archdsl import limits
    from archdsl.backends.tvm.build_cache import BuildCache
    copy_of(built, tmp_path)
    for lib in entries(tmp_path):  # both used long ago...
        os.utime(f"{lib}.seal", (1e9, 1e9))
    latencies(stats(tmp_path, "-f", "json", widths="8"))  # ...and width 8 again now
    keep = _entry(tmp_path, 8)
    monkeypatch.setattr(limits, "MAX_BUILD_CACHE_BYTES", keep.stat().st_size)  # room for one
    BuildCache(tmp_path / "cache").prune(keep=tmp_path / "new.so")
    assert builds == [] and entries(tmp_path) == [keep]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == \
        sorted([keep.name, f"{keep.name}.json", f"{keep.name}.seal", "secret"])


def test_a_secret_others_can_read_is_refused(built, tmp_path, builds):
    copy_of(built, tmp_path)
    os.chmod(tmp_path / "cache" / "secret", 0o644)
    result = stats(tmp_path)
    assert result.exit_code == 1 and "is not private to you" in result.stderr
    assert "Traceback" not in result.output and builds == []


def test_a_point_that_fails_to_build_is_said_and_the_others_measured(built, tmp_path,
                                                                     monkeypatch):
    copy_of(built, tmp_path)
    _entry(tmp_path, 8).unlink()  # width 8 is compiled again, and fails

    def failing(graph, *args, **kwargs):
        raise RuntimeError("Traceback (most recent call last):\n  ...\nTVMError: no schedule")
    monkeypatch.setattr(build, "compile", failing)
    result = stats(tmp_path)
    assert result.exit_code == 1
    assert "error: cannot measure tiny (width=8) on llvm: TVMError: no schedule" in result.stderr
    assert "Traceback" not in result.output
    row = next(ln for ln in result.stdout.splitlines() if "width=8" in ln)
    assert row.rstrip(" │").endswith("—")
    assert "│ tiny (width=4)" in result.stdout and "error" not in result.stdout


def test_ctrl_c_stops_cleanly_and_leaves_no_partial_entry(tmp_path, monkeypatch):
    def interrupted(graph, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(build, "compile", interrupted)
    result = stats(tmp_path)
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["secret"]


def test_unknown_target_and_dtype_are_usage_errors(tmp_path, builds):
    spec = tmp_path / "tiny.arch"
    spec.write_text(SPEC)
    no_gpu = not tvm.cuda(0).exist
    for args, said in ((["--latency", "llvm-nope"], "--latency llvm-nope"),
                       *([(["--latency", "cuda"], "no cuda device to run on")] if no_gpu else []),
                       (["--latency", "llvm", "--dtype", "int8"], "float32 or float16")):
        result = CliRunner().invoke(app, ["stats", str(spec), *args])
        assert result.exit_code == 1 and said in result.stderr, result.output
        assert "Traceback" not in result.output
    assert builds == []


def test_a_cache_dir_that_cannot_be_used_is_a_usage_error(tmp_path, builds):
    (tmp_path / "cache").write_text("a file, not a folder")
    result = stats(tmp_path)
    assert result.exit_code == 1 and "as the build cache" in result.stderr
    assert "--cache-dir" in result.stderr and "Traceback" not in result.output
    assert builds == []


def test_python_measures_as_the_command_does(built, tmp_path):
    import archdsl
    from archdsl.latency import measure
    copy_of(built, tmp_path)
    (tmp_path / "tiny.arch").write_text(SPEC)
    lat = measure(archdsl.load(tmp_path / "tiny.arch", width=4), runs=2,
                  cache_dir=tmp_path / "cache")
    assert lat.cached and lat.ms > 0 and lat.min_runs == 2 and lat.error is None

