"""The core needs neither torch nor tvm; a missing backend names the extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_core_imports_neither_torch_nor_tvm():
    result = _python("import sys, archdsl\n"
                     "a = archdsl.load('specs/resnet50.arch'); a.stats(); a.format()\n"
                     "print(sorted(m for m in ('torch', 'tvm', 'numpy') if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_backend_names_its_extra():
    result = _python("import sys\nsys.modules['torch'] = None\nimport archdsl\n"
                     "try:\n    archdsl.load('specs/lenet5.arch').to_torch()\n"
                     "except ImportError as e:\n    print(type(e).__name__, e)")
    assert "BackendUnavailable" in result.stdout
    assert "pip install 'archdsl[torch]'" in result.stdout


def test_cli_without_torch_says_what_to_install(tmp_path):
    code = ("import sys\nsys.modules['torch'] = None\nsys.argv = ['archdsl', 'export', "
            f"'specs/lenet5.arch', '-o', r'{tmp_path / 'x.onnx'}']\n"
            "from archdsl.cli import main\nmain()")
    result = _python(code)
    assert result.returncode == 1
    assert "pip install 'archdsl[torch]'" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.onnx").exists()
