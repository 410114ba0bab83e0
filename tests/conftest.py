"""What the whole suite shares: which tests are `slow` (pyproject.toml registers the marker).

The fast tier, `python -m pytest -m "not slow"`, leaves out the tests below — TVM builds of
the zoo and of the CPU schedules, tuning, torch.export/torch.compile/ONNX/torchvision runs
over the zoo, and the examples (which train and compile) — and keeps every test that needs no
backend plus the backends' quick ones (each op's lowering, LeNet through TVM, the CLI around
compile and run). The full run, as CI runs it, has both. They are listed here, by test id
prefix, rather than marked in each file; a new heavy test can also take @pytest.mark.slow.
Measured on the project's development machine, see the README (How to test).
"""

from __future__ import annotations

import pytest

SLOW = (
    "tests/backends/test_tvm_zoo.py",  # every zoo network built by TVM and run (~10 min)
    "tests/backends/test_tvm_tune.py",  # MetaSchedule tuning
    "tests/backends/test_tvm_schedules.py::test_scheduled_builds_match_pytorch",
    "tests/backends/test_tvm_schedules.py::test_compiled_models_run_on_every_core_unless_told",
    "tests/backends/test_tvm_schedules.py::test_parallel_loops_are_race_free",
    "tests/backends/test_tvm_float16.py::test_float16_llvm_build_agrees_with_pytorch_float32",
    "tests/backends/test_tvm.py::test_agrees_with_pytorch",
    "tests/backends/test_tvm.py::test_batch_norm_folded_or_not",
    "tests/backends/test_tvm.py::test_cuda_build_holds_device_code",
    "tests/backends/test_tvm.py::test_the_tvm_path_needs_no_torch",
    "tests/backends/test_tvm.py::test_a_saved_library_runs_on_tvms_runtime_alone",
    "tests/backends/test_pytorch.py::test_module_matches_analysis",  # the zoo, each network
    "tests/backends/test_pytorch.py::test_module_exports_as_one_graph",  # torch.export, zoo
    "tests/backends/test_pytorch.py::test_loads_torchvision_weights_and_agrees",
    "tests/backends/test_pytorch.py::test_module_compiles_without_graph_breaks",
    "tests/backends/test_pytorch.py::test_inductor_compiles_lenet",
    "tests/backends/test_pytorch.py::test_in_place_ops_keep_training_correct",
    "tests/backends/test_export.py::test_sequence_ops_export_to_onnx",
    "tests/backends/test_export.py::test_each_format_reloads_and_agrees",
    "tests/backends/test_export.py::test_onnx_runs_in_onnxruntime_with_another_batch",
    "tests/backends/test_export.py::test_channel_and_activation_ops_export_to_onnx",
    "tests/examples/",  # each runs a script that builds, trains or compiles
)


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_terminal_size_from_the_environment(monkeypatch) -> None:
    """Output is tested as a pipe gives it: pytest-xdist's workers (and some shells) set
    COLUMNS, which the CLI honours; a test that wants a width sets it itself."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
