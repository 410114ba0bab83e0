"""Export a built module: ONNX (torch's exporter, checked with onnx.checker and, when
installed, compared against PyTorch with onnxruntime), TorchScript, or a `torch.export` program.

Files are written atomically: a failed export leaves any earlier file untouched.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from archdsl.atomic import atomic_path
from archdsl.errors import ArchError

FORMATS = ("onnx", "torchscript", "exported")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "exported": ".pt2"}


class ExportError(ArchError):
    """An export that could not be produced or did not check out."""


@dataclass
class ExportReport:
    path: Path
    format: str
    bytes: int
    checked: str  # what validated the file
    max_abs_diff: float | None  # vs PyTorch on the same input, when a runtime was available


def export(model: torch.nn.Module, input_shape: tuple[int, ...], fmt: str,
           path: str | os.PathLike, batch: int = 2, opset: int | None = None,
           inputs=()) -> ExportReport:
    """Write `model` in format `fmt` to `path` (atomically, never onto one of `inputs`: the
    spec, the weights). The batch axis is dynamic (ONNX, exported)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format `{fmt}`", None, "one of " + ", ".join(FORMATS))
    model = model.eval()
    # an example batch of 2: with 1, torch.export would specialise the batch axis to 1
    x = torch.randn(max(batch, 2), *input_shape)
    with torch.no_grad():
        expected = model(x)
    target = Path(path)
    with atomic_path(target, inputs) as tmp:
        try:
            checked, diff = _WRITERS[fmt](model, x, expected, tmp, opset)
        except ExportError:
            raise
        except Exception as exc:  # the exporters raise many types; report, keep nothing
            raise ExportError(f"{fmt} export failed: {type(exc).__name__}: {exc}", None) from exc
        size = tmp.stat().st_size
    return ExportReport(target, fmt, size, checked, diff)


def _batch_dim():
    return torch.export.Dim("batch", min=1, max=4096)


def _onnx(model, x, expected, tmp: Path, opset):
    kwargs = {"opset_version": opset} if opset else {}
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
        torch.onnx.export(model, (x,), str(tmp), dynamo=True, input_names=["input"],
                          output_names=["output"], dynamic_shapes=({0: _batch_dim()},),
                          verbose=False, external_data=False, **kwargs)
    import onnx
    onnx.checker.check_model(str(tmp), full_check=True)
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnx.checker", None
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    diff = float(abs(got - expected.numpy()).max())
    _check_close(diff, expected, "onnxruntime")
    return "onnx.checker + onnxruntime", diff


def _torchscript(model, x, expected, tmp: Path, opset):
    with warnings.catch_warnings():  # TorchScript is deprecated upstream; still asked for
        warnings.simplefilter("ignore", FutureWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model, x)
        traced.save(str(tmp))
        loaded = torch.jit.load(str(tmp))
    with torch.no_grad():
        diff = float((loaded(x) - expected).abs().max())
    _check_close(diff, expected, "the reloaded TorchScript module")
    return "torch.jit.load", diff


def _exported(model, x, expected, tmp: Path, opset):
    program = torch.export.export(model, (x,), dynamic_shapes=({0: _batch_dim()},))
    torch.export.save(program, str(tmp))
    loaded = torch.export.load(str(tmp)).module()
    with torch.no_grad():
        diff = float((loaded(x) - expected).abs().max())
    _check_close(diff, expected, "the reloaded exported program")
    return "torch.export.load", diff


def _check_close(diff: float, expected: torch.Tensor, what: str) -> None:
    scale = max(1.0, float(expected.abs().max()))
    if diff > 1e-4 * scale:
        raise ExportError(f"{what} disagrees with PyTorch: max abs diff {diff:.3g}", None)


_WRITERS = {"onnx": _onnx, "torchscript": _torchscript, "exported": _exported}
