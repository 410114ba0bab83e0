"""What `archdsl import SOURCE` builds: a torchvision model, a timm model, or a module made
by the user's own code.

    torchvision:resnet50          torchvision.models.get_model("resnet50"), no weights
    timm:resnet50d                timm.create_model("resnet50d"), when timm is installed
    package.module:callable       imports package.module and calls callable(**args) — this
                                  runs the user's code, by their explicit request

Models are built with their parameters on the meta device (no memory, no initialisation),
so any size imports in moments; a constructor that cannot run that way is run normally.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn

from archdsl.errors import UsageError, did_you_mean, first_line

from .trace import parameters_on_meta


@dataclass
class Built:
    module: nn.Module
    name: str  # the architecture's name in the spec
    input_shape: tuple[int, ...] | None  # per image; None when the source does not say


def build(source: str, args: dict[str, Any]) -> Built:
    kind, sep, rest = source.partition(":")
    if not sep or not rest:
        raise UsageError(f"cannot read the source `{source}`", None, _FORMS)
    if kind == "torchvision":
        return _torchvision(rest, args)
    if kind == "timm":
        return _timm(rest, args)
    return _callable(kind, rest, args)


_FORMS = ("write torchvision:NAME (e.g. torchvision:resnet50), timm:NAME, or "
          "package.module:callable")


def _construct(fn: Any, args: dict[str, Any]) -> nn.Module:
    try:
        with parameters_on_meta():
            return fn(**args)
    except (NotImplementedError, RuntimeError):  # a constructor computing with its weights
        return fn(**args)


def _torchvision(name: str, args: dict[str, Any]) -> Built:
    try:
        import torchvision
    except ImportError:
        raise UsageError("torchvision is not installed", None, "pip install torchvision") \
            from None
    names = torchvision.models.list_models()
    if name not in names:
        raise UsageError(f"torchvision has no model `{name}`", None,
                         did_you_mean(name, names) or "see torchvision.models.list_models()")
    fn = torchvision.models.get_model_builder(name)
    if "weights_backbone" in inspect.signature(fn).parameters:
        # detection and segmentation models download ImageNet weights for their backbone by
        # default: an import reads no weights, and fetches nothing from the network
        args = {"weights_backbone": None, **args}
    with warnings.catch_warnings():
        # "the default weight initialization will change" (GoogLeNet, Inception v3): nothing
        # is initialized here, the parameters are on the meta device
        warnings.filterwarnings("ignore", category=FutureWarning, module="torchvision")
        module = _call(lambda **kw: _construct(fn, kw), args, f"torchvision:{name}")
    size = getattr(module, "image_size", None)  # a ViT built for it (ViT-H/14: 224, not the
    if isinstance(size, int):                   # 518 of its SWAG weights)
        return Built(module, name, (3, size, size))
    return Built(module, name, _torchvision_shape(name))


def _torchvision_shape(name: str) -> tuple[int, ...] | None:
    """The input size the model's published weights were evaluated at (Inception v3: 299)."""
    import torchvision
    try:
        weights = torchvision.models.get_model_weights(name)
        crop = list(weights)[0].transforms().crop_size
    except Exception:  # noqa: BLE001 — no weights, or no crop size: the caller decides
        return None
    size = crop[0] if isinstance(crop, (list, tuple)) else crop
    return (3, int(size), int(size))


def _timm(name: str, args: dict[str, Any]) -> Built:
    try:
        import timm
    except ImportError:
        raise UsageError("timm is not installed", None,
                         "pip install timm (archdsl does not depend on it)") from None
    if name not in timm.list_models():
        raise UsageError(f"timm has no model `{name}`", None,
                         did_you_mean(name, timm.list_models()) or "see timm.list_models()")
    module = _call(lambda **kw: _construct(lambda **a: timm.create_model(name, **a), kw),
                   {"pretrained": False, **args}, f"timm:{name}")
    size = getattr(module, "pretrained_cfg", {}).get("input_size")
    return Built(module, name, tuple(size) if size else None)


def _callable(module_name: str, attr: str, args: dict[str, Any]) -> Built:
    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import `{module_name}`: {first_line(exc)}", None,
                         f"is it on the Python path? ({sys.path[0] or '.'} is searched first)") \
            from None
    except Exception as exc:  # the user's module ran and failed, or its name is no name
        raise UsageError(f"importing `{module_name}` failed: {type(exc).__name__}: "
                         f"{first_line(exc)}", None) from None
    target: Any = mod
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"`{module_name}` has no `{attr}`", None,
                             did_you_mean(part, dir(target)))
        target = getattr(target, part)
    if isinstance(target, nn.Module):
        if args:
            raise UsageError(f"`{module_name}:{attr}` is a module already; --args apply to "
                             "a callable that builds one", None)
        return Built(target, attr.split(".")[-1], None)
    if not callable(target):
        raise UsageError(f"`{module_name}:{attr}` is neither a module nor callable", None)
    module = _call(lambda **kw: _construct(target, kw), args, f"{module_name}:{attr}")
    return Built(module, attr.split(".")[-1], None)


def _call(fn: Any, args: dict[str, Any], what: str) -> nn.Module:
    try:
        module = fn(**args)
    except TypeError as exc:
        raise UsageError(f"{what} does not take these arguments: {first_line(exc)}", None) \
            from None
    except Exception as exc:  # the user's code may raise anything
        raise UsageError(f"building {what} failed: {type(exc).__name__}: {first_line(exc)}",
                         None) from None
    if not isinstance(module, nn.Module):
        raise UsageError(f"{what} returned a {type(module).__name__}, not an nn.Module", None)
    return module
