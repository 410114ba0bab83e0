"""Smoke tests: every script in examples/ runs as a user would run it and says what it should."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(script: str, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{script} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc.stdout


def test_build_and_inspect():
    out = run("build_and_inspect.py")
    assert "params 25,557,032" in out  # ResNet-50, torchvision's count
    assert "forward (2, 3, 224, 224) -> (2, 1000)" in out
    assert "Architecture('tiny'" in out and "forward (2, 3, 32, 32) -> (2, 10)" in out
    assert "Architecture('mobilenet_v1', input=3×160×160" in out
    assert "forward (2, 3, 160, 160) -> (2, 1000)" in out
    assert "0.5 MobileNet-160: 77 M MACs, 1.33 M params" in out


def test_build_and_inspect_other_spec():
    out = run("build_and_inspect.py", str(ROOT / "specs" / "lenet5.arch"))
    assert "Architecture('lenet5', input=1×32×32, output=10" in out
    assert "forward (2, 1, 32, 32) -> (2, 10)" in out


def test_train_digits_beats_90_percent():
    pytest.importorskip("sklearn")
    pytest.importorskip("torchvision")
    out = run("train_digits.py", "--epochs", "5")
    assert "note: no horizontal flips" in out and "epoch  5:" in out
    m = re.search(r"^top-1 validation accuracy: ([0-9.]+)", out, re.M)
    assert m, out
    assert float(m.group(1)) > 0.90, out


def test_transfer_learning():
    pytest.importorskip("torchvision")
    out = run("transfer_learning.py", "--steps", "2")
    assert "fc.weight: [10, 512] vs [1000, 512]" in out
    assert "fc.bias: [10] vs [1000]" in out
    assert "freeze(model): trainable ['fc.weight', 'fc.bias']" in out
    assert "changed tensors: ['fc.bias', 'fc.weight']" in out
    assert "OK: only the head changed" in out


def test_export_and_compile(tmp_path):
    pytest.importorskip("onnxruntime")
    out = run("export_and_compile.py", "--out", str(tmp_path))
    assert "Architecture('mobilenet_v1', input=3×96×96" in out
    m = re.search(r"ONNX: .* max abs diff vs PyTorch ([0-9.e+-]+)", out)
    assert m and float(m.group(1)) < 1e-4
    assert (tmp_path / "mobilenet_v1.onnx").exists()
    if "TVM: not installed" not in out:
        m = re.search(r"TVM: .* max abs diff vs PyTorch ([0-9.e+-]+)", out)
        assert m and float(m.group(1)) < 1e-4
        top = re.search(r"top class: (\d+) \(PyTorch\), (\d+) \(TVM\)", out)
        assert top and top.group(1) == top.group(2)


def test_user_op():
    out = run("user_op.py")
    assert "conv1: conv3-32/1 bias=false dilation=1 groups=1 pad=1 norm=groupnorm num_groups=8" \
        in out
    assert "gn       groupnorm              params    128" in out
    assert "state_dict: conv1.weight, groupnorm1.weight, groupnorm1.bias" in out
    assert "forward (2, 3, 32, 32) -> (2, 10)" in out
    if "TVM: not installed" not in out:
        m = re.search(r"TVM: max abs diff vs PyTorch ([0-9.e+-]+)", out)
        assert m and float(m.group(1)) < 1e-4


def test_user_op_from_the_command_line(tmp_path):
    spec = tmp_path / "gn.arch"
    spec.write_text("arch gn\ninput 8x4x4\nconv3-8 norm=gn num_groups=4\ngroupnorm(2)\n")
    proc = subprocess.run([sys.executable, "-m", "archdsl", "--plugin",
                           str(EXAMPLES / "user_op.py"), "stats", str(spec)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "608" in proc.stdout  # 8·8·9 conv weights + 2·8 + 2·8 groupnorm params
    proc = subprocess.run([sys.executable, "-m", "archdsl", "check", str(spec)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "unknown op or block `groupnorm`" in proc.stderr
