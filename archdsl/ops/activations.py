"""The activations of torch.nn that classifiers use, each usable as a layer and as `act=`."""

from __future__ import annotations

import math

from .core import INPUTS, OUTPUT, REQUIRED, AttrSpec, Keeps, OpDef, OpShapeError, Shape
from .shapes import fmt_shape


def _act(name: str, doc: str, keeps: Keeps = INPUTS, **attrs: AttrSpec) -> OpDef:
    return OpDef(name, "act", doc, attrs=dict(attrs), positional=tuple(attrs), keeps=keeps)


def _prelu_slopes(a: dict, ins: list[Shape]) -> int:
    return ins[0][0] if a["per_channel"] else 1


def _prelu_shape(a: dict, ins: list[Shape]) -> Shape:
    if a["per_channel"] and len(ins[0]) == 2:  # PyTorch's slopes follow dim 1: the tokens
        raise OpShapeError("a slope per channel needs a C×H×W map or a vector, got a sequence "
                           f"{fmt_shape(ins[0])}", "use one slope (per_channel=false)")
    return ins[0]


def _celu_shape(a: dict, ins: list[Shape]) -> Shape:
    if a["alpha"] == 0:
        raise OpShapeError("celu's alpha must not be 0 (it divides by it)")
    return ins[0]


def _rrelu_shape(a: dict, ins: list[Shape]) -> Shape:
    if not a["lower"] <= a["upper"]:
        raise OpShapeError(f"rrelu's lower slope {a['lower']} is above its upper "
                           f"{a['upper']}", "rrelu(lower, upper) with lower <= upper")
    return ins[0]


_ALPHA = AttrSpec("float", 1.0, doc="the scale of the negative part")
_LAMBDA = AttrSpec("float", 0.5, minimum=0.0, doc="the half-width of the band set to 0")
_ONE_MORE = Keeps(("extra",), extra=lambda a, ins, out: math.prod(out))  # an intermediate
_INPUT_AND_ONE_MORE = Keeps(("inputs", "extra"), extra=lambda a, ins, out: math.prod(out))

# The activations of torch.nn that classifiers use, each usable as a layer and as `act=`.
# They compute elementwise (softmax and log_softmax over channels), make C·H·W units and have
# no weights, except prelu's learned slopes (one, or one per channel: params).
ACTIVATION_OPS = [
    _act("relu", "rectified linear unit", OUTPUT),
    _act("relu6", "ReLU capped at 6 (MobileNet)"),
    _act("sigmoid", "logistic sigmoid", OUTPUT),
    _act("tanh", "hyperbolic tangent", OUTPUT),
    _act("gelu", "Gaussian error linear unit; approximate=tanh for its tanh form",
         approximate=AttrSpec("choice", "none", choices=("none", "tanh"))),
    _act("swish", "x·sigmoid(x), a.k.a. SiLU"),
    _act("hardswish", "x·relu6(x+3)/6 (MobileNetV3)"),
    _act("hardsigmoid", "relu6(x+3)/6 (MobileNetV3's squeeze-and-excitation gate)"),
    _act("hardtanh", "x clipped to [min_val, max_val]: hardtanh(-1, 1)",
         min_val=AttrSpec("float", -1.0), max_val=AttrSpec("float", 1.0)),
    _act("leakyrelu", "x, or negative_slope·x below 0: leakyrelu(0.2)",
         negative_slope=AttrSpec("float", 0.01)),
    _act("elu", "x, or alpha·(exp(x) − 1) below 0 (Clevert et al. 2016)", alpha=_ALPHA),
    OpDef("celu", "act", "max(0, x) + min(0, alpha·(exp(x/alpha) − 1)) (Barron 2017)",
          attrs={"alpha": AttrSpec("float", 1.0, doc="not 0")}, positional=("alpha",),
          shape=_celu_shape, keeps=INPUTS),
    _act("selu", "scale·elu(x, alpha) with SNNs' fixed constants (Klambauer et al. 2017)"),
    _act("softplus", "log(1 + exp(beta·x))/beta, x itself where beta·x > threshold",
         beta=AttrSpec("float", 1.0), threshold=AttrSpec("float", 20.0)),
    _act("mish", "x·tanh(softplus(x)) (Misra 2019)"),
    # two tensors each: the input and an intermediate of the output's size (1 + |x|; the
    # buffer of log_sigmoid_forward), as autograd keeps them
    _act("softsign", "x / (1 + |x|)", _INPUT_AND_ONE_MORE),
    _act("logsigmoid", "log(sigmoid(x))", _INPUT_AND_ONE_MORE),
    OpDef("prelu", "act", "x, or a learned slope·x below 0 (He et al. 2015); "
          "per_channel=true learns one slope per channel",
          attrs={"per_channel": AttrSpec("bool", False),
                 "init": AttrSpec("float", 0.25, doc="initial slope")}, shape=_prelu_shape,
          weights=lambda a, ins, out: _prelu_slopes(a, ins),
          tensors=lambda a, ins, out: {"weight": (_prelu_slopes(a, ins),)},
          keeps=Keeps(("inputs",), ("inputs",))),
    _act("hardshrink", "x where |x| > lambd, else 0", lambd=_LAMBDA),
    _act("softshrink", "x − lambd·sign(x) where |x| > lambd, else 0", lambd=_LAMBDA),
    # autograd keeps tanh(x), not x
    _act("tanhshrink", "x − tanh(x)", _ONE_MORE),
    _act("threshold", "x where x > threshold, else value: threshold(0.1, 20)",
         threshold=AttrSpec("float", REQUIRED), value=AttrSpec("float", REQUIRED)),
    # a random slope per element in training (kept with the input), their mean at inference
    OpDef("rrelu", "act", "randomized leaky ReLU (Xu et al. 2015): a slope drawn from "
          "[lower, upper] below 0 in training, (lower + upper)/2 at inference",
          attrs={"lower": AttrSpec("float", 1 / 8), "upper": AttrSpec("float", 1 / 3)},
          positional=("lower", "upper"), shape=_rrelu_shape, keeps=_INPUT_AND_ONE_MORE),
    _act("softmax", "softmax over channels", OUTPUT),
    _act("softmin", "softmax of −x over channels", OUTPUT),
    _act("log_softmax", "log of the softmax over channels", OUTPUT),
]
