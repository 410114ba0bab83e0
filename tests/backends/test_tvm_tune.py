"""MetaSchedule tuning (backends/tvm/tune.py), against PyTorch as the oracle.

Tuning here is real but tiny: a few trials per kernel of a 4-kernel network with a small
search population; the build and measurement workers start once for the whole file."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
pytest.importorskip("xgboost")  # MetaSchedule's cost model

from test_tvm import _cuda_compiler, _run_torch, _torch_reference  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import archdsl  # noqa: E402
from archdsl.backends import tvm as backend  # noqa: E402
from archdsl.backends.tvm import database  # noqa: E402
from archdsl.backends.tvm import tune as tvm_tune  # noqa: E402
from archdsl.cli import app  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"

# Four kernels: conv+bias+relu, mean (gap), matmul+bias, and the reshape between them
NET_A = """
arch tune_a
input 3x8x8
c1: conv3-8 act=relu
gap
fc: FC-4
"""
# shares A's first layer (same shapes, other weights), nothing else
NET_B = """
arch tune_b
input 3x8x8
c1: conv3-8 act=relu
c2: conv1-6 act=sigmoid
gap
"""


@pytest.fixture(autouse=True)
def small_search(monkeypatch):
    monkeypatch.setattr(tvm_tune, "SEARCH", {"population_size": 24, "init_min_unmeasured": 8,
                                             "genetic_num_iters": 1})


def _compile(spec: str, **options):
    """Compile with PyTorch's weights; returns (compiled, events, max |diff| / output scale)."""
    arch = archdsl.load(spec)
    model, state = _torch_reference(arch)
    events: list[tvm_tune.TuneEvent] = []
    compiled = backend.compile(arch.graph, weights=state, progress=events.append, **options)
    x = np.random.default_rng(1).standard_normal(compiled.input_shape).astype(np.float32)
    ref = _run_torch(model, x)
    return compiled, events, float(np.abs(compiled(x) - ref).max() / np.abs(ref).max())


def _records(db: Path) -> int:
    return len((db / "database_tuning_record.json").read_text().splitlines())


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """NET_A tuned to 2 trials per kernel: (database, events)."""
    db = tmp_path_factory.mktemp("tuning") / "db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tvm_tune, "SEARCH", {"population_size": 24, "init_min_unmeasured": 8,
                                        "genetic_num_iters": 1})
        compiled, events, err = _compile(NET_A, tune=2, tuning_db=db)
    assert err < 1e-4
    return db, events


def test_tuning_writes_a_database_and_the_build_still_matches_pytorch(tuned):
    db, events = tuned
    start = events[0]
    assert start.kind == "start" and start.tasks == start.tasks_to_tune == 4
    assert start.trials_total == 8 and start.database == db
    batches = [e for e in events if e.kind == "trials"]
    assert batches and batches[-1].trials == _records(db) <= 8
    assert batches[-1].best_ms is not None and batches[-1].best_ms > 0
    # then the default schedules of the 4 kernels were measured as the trials were
    assert [e.kind for e in events[-2:]] == ["compare", "applied"]
    assert events[-1].applied + events[-1].defaults == 4
    assert (db / "database_workload.json").is_file()
    log = (db / "logs" / "tuning.log").read_text()
    assert "TaskScheduler picks" in log  # MetaSchedule's log went to the file


def test_rerunning_tunes_nothing_and_a_larger_budget_extends_and_resumes(tuned):
    db, _ = tuned
    before = _records(db)
    _, events, err = _compile(NET_A, tune=2, tuning_db=db)
    assert [e.kind for e in events] == ["start", "applied"] and events[0].trials_total == 0
    assert _records(db) == before and err < 1e-4

    # tune=4, interrupted (a real SIGINT) after its first measured batch...
    def interrupt(event):
        if event.kind == "trials":
            os.kill(os.getpid(), signal.SIGINT)

    arch = archdsl.load(NET_A)
    with pytest.raises(KeyboardInterrupt):
        backend.compile(arch.graph, tune=4, tuning_db=db, progress=interrupt)
    after_one = _records(db)
    assert after_one > before  # that batch is kept
    # ... and resumed: it plans only what is missing and finishes
    _, events, err = _compile(NET_A, tune=4, tuning_db=db)
    planned = events[0].trials_total
    assert 0 < planned <= 4 * 4 - after_one
    assert _records(db) > after_one and err < 1e-4
    assert events[-1].applied + events[-1].defaults == 4
    _, events, _ = _compile(NET_A, tune=4, tuning_db=db)
    assert events[0].trials_total == 0


def test_a_network_sharing_a_layer_reuses_its_schedule(tuned):
    db, _ = tuned
    before = (db / "database_workload.json").read_text()
    compiled, events, err = _compile(NET_B, tuning_db=db)  # tune=0: only applied
    assert [e.kind for e in events] == ["applied"]
    # the conv3-8 of NET_A is tuned, and so is the mean: on channels blocked by the vector
    # width, NET_B's 6 are padded to the block NET_A's 8 fill; the conv1-6 and the slice back
    # to 6 channels are not
    assert events[0].tasks == 4
    assert events[0].applied + events[0].defaults == 2
    assert err < 1e-4
    assert (db / "database_workload.json").read_text() == before  # read, not written


def test_a_torn_last_line_is_dropped_and_a_busy_database_is_still_applied(tuned, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    records = db / "database_tuning_record.json"
    torn = records.read_text() + '[0, [[["b0", "SampleCate'  # a process killed mid-line
    records.write_text(torn)
    before = {p.name: p.read_bytes() for p in db.iterdir() if p.is_file()}
    _, events, err = _compile(NET_A, tuning_db=db)
    assert events[-1].applied + events[-1].defaults == 4 and err < 1e-4
    # applying reads a private copy (repaired there): the folder is not written at all
    assert {p.name: p.read_bytes() for p in db.iterdir() if p.is_file()} == before
    with database.locked(db):  # a tuning job holds it: applied all the same
        _, events, _ = _compile(NET_A, tuning_db=db)
        assert events[-1].applied + events[-1].defaults == 4
        with pytest.raises(tvm_tune.TuningError, match="in use by another tuning job"):
            backend.compile(archdsl.load(NET_A).graph, tune=3, tuning_db=db)


def _default_times(db: Path, seconds: float | None = None, schedule: str | None = None) -> dict:
    """The measured times of the default schedules in the database; with `seconds` (or
    `schedule`), every entry rewritten to it."""
    file = db / "archdsl_defaults.json"
    notes = json.loads(file.read_text())
    if seconds is not None or schedule is not None:
        file.write_text(json.dumps({k: {"seconds": v["seconds"] if seconds is None else seconds,
                                        "schedule": schedule or v["schedule"]}
                                    for k, v in notes.items()}))
    return notes


def test_each_kernel_keeps_the_faster_of_its_tuned_and_default_schedules(tuned, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    measured = _default_times(db)  # while tuning, every kernel's default schedule was timed
    assert len(measured) == 4 and all(0 < v["seconds"] < 1 for v in measured.values())

    def applied(**options):
        compiled, events, err = _compile(NET_A, tuning_db=db, **options)
        assert err < 1e-4
        last = events[-1]
        assert [k.built_with for k in last.kernels].count("default") == last.defaults
        return last.applied, last.defaults

    _, events, _ = _compile(NET_A, tuning_db=db)
    kernels = {k.kernel: k for k in events[-1].kernels}
    assert len(kernels) == 4 and all(k.tuned_s > 0 and k.default_s > 0 for k in kernels.values())
    assert events[-1].defaults == sum(k.default_s <= k.tuned_s for k in kernels.values())
    _default_times(db, seconds=0.0)  # every default schedule faster: the database unused
    assert applied() == (0, 4)
    assert applied(schedules=False) == (4, 0)  # ... unless there are no default schedules
    _default_times(db, seconds=1e9)  # every tuned schedule faster
    assert applied() == (4, 0)
    _default_times(db, seconds=0.0, schedule="1234")  # timed for another default schedule
    assert applied() == (4, 0)


def test_a_failure_inside_metaschedule_is_a_tuning_error(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("Traceback ...\n  File x\nInternalError: Check failed: boom")

    monkeypatch.setattr(tvm_tune, "_tune_group", fail)
    arch = archdsl.load(NET_A)
    with pytest.raises(tvm_tune.TuningError, match=r"MetaSchedule failed while tuning "
                       r"\(InternalError: Check failed: boom\).*logs/tuning.log"):
        backend.compile(arch.graph, tune=2, tuning_db=tmp_path / "db")


def test_a_missing_database_without_tuning_is_an_error(tmp_path):
    arch = archdsl.load(NET_A)
    with pytest.raises(tvm_tune.TuningError, match="no tuning database at"):
        backend.compile(arch.graph, tuning_db=tmp_path / "none")
    with pytest.raises(ValueError, match="number of trials"):
        backend.compile(arch.graph, tune=-1, tuning_db=tmp_path)


def test_the_default_database_is_per_user_and_per_target(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = backend.make_target("llvm")
    path = tvm_tune.default_database(target)
    assert path == tmp_path / "archdsl" / "tuning" / f"llvm-{target.attrs['mcpu']}"
    cuda = backend.make_target({"kind": "cuda", "arch": "sm_80"})
    assert tvm_tune.default_database(cuda).name == "cuda-sm_80"


needs_cuda_compiler = pytest.mark.skipif(_cuda_compiler() is None,
                                         reason="no CUDA compiler (NVRTC or nvcc)")


@needs_cuda_compiler
def test_cuda_without_a_gpu_says_so_and_builds_with_the_database(monkeypatch, tmp_path):
    if tvm.cuda(0).exist:
        pytest.skip("a GPU is present: tuning would measure on it")
    monkeypatch.setenv("TVM_CUDA_COMPILE_MODE", _cuda_compiler())
    arch = archdsl.load(NET_A)
    events: list[tvm_tune.TuneEvent] = []
    compiled = backend.compile(arch.graph, {"kind": "cuda", "arch": "sm_80"}, tune=8,
                               tuning_db=tmp_path / "db", progress=events.append)
    assert [e.kind for e in events] == ["note", "applied"]
    assert "tuning needs the cuda GPU" in events[0].message and events[1].applied == 0
    assert [m.kind for m in compiled.device_modules()] == ["cuda"]
    with pytest.warns(UserWarning, match="tuning needs the cuda GPU"):  # no progress: a warning
        backend.compile(arch.graph, {"kind": "cuda", "arch": "sm_80"}, tune=8,
                        tuning_db=tmp_path / "db")
    spec = tmp_path / "a.arch"
    spec.write_text(NET_A)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = _invoke("compile", spec, "-t", "cuda:sm_80", "--tune", 8, "-o", tmp_path / "a.so")
    assert result.exit_code == 0, result.output
    assert "note: tuning needs the cuda GPU" in result.output and "Traceback" not in result.output
    assert (tmp_path / "a.so").is_file()


# ---------------------------------------------------------------- the CLI

def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_compile_with_a_tuning_database(tuned, tmp_path, monkeypatch):
    spec = tmp_path / "a.arch"
    spec.write_text(NET_A)
    lib = tmp_path / "a.so"
    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    _default_times(db, seconds=1e9)  # the tuned schedules win
    result = _invoke("compile", spec, "-o", lib, "--tune", 2, "--tuning-db", db)
    assert result.exit_code == 0, result.output
    assert "4 of 4 kernels from the tuning database)" in result.output
    manifest = json.loads((tmp_path / "a.so.json").read_text())
    per_kernel = manifest["tuning"].pop("per_kernel")
    assert manifest["tuning"] == {"database": str(db), "trials_per_kernel": 2,
                                  "trials_this_run": 0, "kernels": 4,
                                  "kernels_from_database": 4, "kernels_default_faster": 0}
    assert len(per_kernel) == 4 and {k["built_with"] for k in per_kernel} == {"tuned"}
    assert all(k["tuned_ms"] > 0 and k["default_ms"] == 1e12 for k in per_kernel), per_kernel
    _default_times(db, seconds=0.0)  # archdsl's default schedules win
    result = _invoke("compile", spec, "-o", lib, "--tuning-db", db)
    assert ("0 of 4 kernels from the tuning database (4 more measured faster with archdsl's "
            "default schedule)") in result.output
    # --tune without --tuning-db: the per-user database for this CPU
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    default = tvm_tune.default_database(backend.make_target("llvm"))
    shutil.copytree(db, default)
    result = _invoke("compile", spec, "-o", lib, "--tune", 2)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a.so.json").read_text())["tuning"]["database"] == str(default)
    # without --tune or --tuning-db nothing is tuned or applied
    assert _invoke("compile", spec, "-o", lib).exit_code == 0
    assert json.loads((tmp_path / "a.so.json").read_text())["tuning"] is None


def test_cli_a_missing_database_is_a_message_and_writes_nothing(tmp_path):
    spec = tmp_path / "a.arch"
    spec.write_text(NET_A)
    result = _invoke("compile", spec, "-o", tmp_path / "a.so", "--tuning-db", tmp_path / "x")
    assert result.exit_code == 1
    assert "error: no tuning database at" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.arch"]
    result = _invoke("compile", spec, "--tune", -1)
    assert result.exit_code == 2 and "Invalid value for '--tune'" in result.output


def test_cli_ctrl_c_while_tuning_writes_nothing_and_says_how_to_go_on(tmp_path, monkeypatch):
    def interrupted(self, *args, progress=None, tuning_db=None, **kwargs):
        progress(tvm_tune.TuneEvent("start", Path(tuning_db), tasks=4, tasks_to_tune=4,
                                    trials_total=8))
        raise KeyboardInterrupt

    monkeypatch.setattr(archdsl.Architecture, "compile", interrupted)
    spec = tmp_path / "a.arch"
    spec.write_text(NET_A)
    result = _invoke("compile", spec, "-o", tmp_path / "a.so", "--tune", 2, "--tuning-db",
                     tmp_path / "db")
    assert result.exit_code == 130
    assert "interrupted: no library written; " in result.output
    assert f"{tmp_path / 'db'} keeps every trial measured so far" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.arch"]


# ---------------------------------------------------------------- hostile databases (issue #13)

@pytest.mark.parametrize("name", ["database_tuning_record.json", "database_workload.json",
                                  "archdsl_defaults.json"])
def test_a_planted_link_in_a_copied_database_is_refused_and_never_written(tuned, tmp_path,
                                                                            name):
    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (db / name).unlink()
    (db / name).symlink_to(victim)
    arch = archdsl.load(NET_A)
    for tune in (0, 2):  # applying, and tuning into it
        with pytest.raises(tvm_tune.TuningError, match="symbolic link"):
            backend.compile(arch.graph, tune=tune, tuning_db=db)
    assert victim.read_text() == "precious\n"


def test_applying_writes_no_lock_and_follows_no_link(tuned, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    (db / ".lock").unlink(missing_ok=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (db / ".lock").symlink_to(victim)  # was opened with "w": truncated
    (db / "logs").mkdir(exist_ok=True)
    _, events, err = _compile(NET_A, tuning_db=db)
    assert events[-1].applied + events[-1].defaults == 4 and err < 1e-4
    assert victim.read_text() == "precious\n"
    with pytest.raises(tvm_tune.TuningError, match="symbolic link"):
        backend.compile(archdsl.load(NET_A).graph, tune=2, tuning_db=db)
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("notes", ["{not json", '{"k": {"schedule": "s", "seconds": "fast"}}',
                                   '{"k": {"schedule": "s", "seconds": -1}}', "[1, 2]",
                                   '{"k": {"schedule": "s", "seconds": NaN}}'])
def test_a_corrupt_defaults_note_is_an_error_when_applying(tuned, tmp_path, notes):
    """It used to be read as "no default measured": every tuned kernel was taken, however
    much slower than archdsl's default schedule."""
    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    (db / "archdsl_defaults.json").write_text(notes)
    with pytest.raises(tvm_tune.TuningError, match="archdsl_defaults.json is corrupt"):
        backend.compile(archdsl.load(NET_A).graph, tuning_db=db)
    spec = tmp_path / "a.arch"
    spec.write_text(NET_A)
    result = _invoke("compile", spec, "-o", tmp_path / "a.so", "--tuning-db", db)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "archdsl_defaults.json is corrupt" in result.output
    assert not (tmp_path / "a.so").exists()


def test_a_database_file_that_is_not_a_regular_file(tuned, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    (db / "database_workload.json").unlink()
    os.mkfifo(db / "database_workload.json")
    with pytest.raises(tvm_tune.TuningError, match="FIFO"):
        backend.compile(archdsl.load(NET_A).graph, tuning_db=db)
