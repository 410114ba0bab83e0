"""`archdsl import` on networks written for this test (beyond the zoo), its errors, the
CLI, and timm models when timm is installed (archdsl does not depend on it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import archdsl  # noqa: E402
from archdsl.backends.pytorch.importer import ImportFailed, check_counts  # noqa: E402
from archdsl.errors import ArchError  # noqa: E402


def round_trip(module: nn.Module, shape: tuple[int, ...], batch: int = 2) -> archdsl.Architecture:
    """Import, then: the counts equal the module's (params; FlopCounterMode's MACs), the
    spec's module loads the original state_dict strictly and computes the same."""
    imported = archdsl.from_torch(module, shape)
    check = check_counts(imported)
    assert check.ok, check.describe()
    arch = imported.load()
    ours = arch.to_torch().eval()
    ours.load_state_dict(module.state_dict(), strict=True)
    x = torch.randn(batch, *shape)
    module.eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), module(x), atol=1e-5)
    return arch


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c, c // 4, 1)
        self.expand = nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class Unit(nn.Module):
    """Written with functional calls, a gate, a channels-last MLP and a residual sum."""

    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c if stride == 1 else c // 2, c, 3, stride, 1, bias=False)
        self.norm = nn.BatchNorm2d(c)
        self.se = SE(c)
        self.ln = nn.LayerNorm(c)
        self.mlp = nn.Linear(c, c)
        self.proj = None if stride == 1 else nn.Conv2d(c // 2, c, 1, stride, bias=False)

    def forward(self, x):
        y = self.se(F.relu(self.norm(self.conv(x))))
        z = self.mlp(self.ln(y.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        y = F.gelu(z) + y
        return y + (x if self.proj is None else self.proj(x))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU())
        self.units = nn.ModuleList([Unit(8, 1), Unit(16, 2), Unit(16, 1), Unit(32, 2)])
        self.branches = nn.ModuleList([nn.Conv2d(32, 8, 1), nn.Conv2d(32, 8, 3, padding=1)])
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        for u in self.units:
            x = u(x)
        x = torch.cat([b(x) for b in self.branches], dim=1)
        return self.head(torch.flatten(x.mean((2, 3), keepdim=True), 1))


def test_a_network_written_with_functions_round_trips():
    torch.manual_seed(0)
    arch = round_trip(Net(), (3, 16, 16))
    assert "units.3.proj" in {n.name for n in arch.graph.nodes}
    imported = archdsl.from_torch(Net(), (3, 16, 16))
    assert "block unit(" in imported.text and "gate {" in imported.text
    assert "concat {" in imported.text and "residual {" in imported.text


class TinyViT(nn.Module):
    """A transformer written unlike torchvision's: flatten(2).transpose(1, 2), its own
    blocks, pre-norm, a learned class token and positions, `x[:, 0]`."""

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 17, dim))
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "n1": nn.LayerNorm(dim), "attn": nn.MultiheadAttention(dim, heads, batch_first=True),
            "n2": nn.LayerNorm(dim), "fc1": nn.Linear(dim, 2 * dim), "fc2": nn.Linear(2 * dim, dim),
        }) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for b in self.blocks:
            h = b["n1"](x)
            x = x + b["attn"](h, h, h, need_weights=False)[0]
            x = x + b["fc2"](F.gelu(b["fc1"](b["n2"](x))))
        return self.head(self.norm(x)[:, 0])


def test_a_transformer_written_differently_round_trips():
    torch.manual_seed(0)
    arch = round_trip(TinyViT(), (3, 16, 16))
    ops = [n.op for n in arch.graph.nodes]
    assert {"tokens", "class_token", "pos_embedding", "attention", "token"} <= set(ops)


def test_what_cannot_be_mapped_is_named_with_where_and_shapes():
    class Shuffle(nn.Module):  # halves of the height: archdsl cuts channels only
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.gate = nn.Hardsigmoid()

        def forward(self, x):
            a, b = self.conv(x).chunk(2, dim=2)
            return torch.cat([self.gate(a), b], 1)

    with pytest.raises(ImportFailed) as info:
        archdsl.from_torch(Shuffle(), (3, 8, 8))
    text = info.value.render()
    assert "chunk along dimension 2" in text and "2×8×8×8 → 2×8×4×8" in text
    assert isinstance(info.value, ArchError) and "--partial" in text
    result = archdsl.from_torch(Shuffle(), (3, 8, 8), partial=True)
    assert not result.complete and "PARTIAL IMPORT" in result.text
    assert [n.name for n in result.load().graph.nodes] == ["input", "conv"]


def test_shared_weights_and_untraceable_control_flow_are_errors_not_tracebacks():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    with pytest.raises(ImportFailed, match="1 of its operations") as info:
        archdsl.from_torch(Shared(), (4, 8, 8))
    assert "shared weights" in info.value.render()

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ArchError, match="cannot trace"):
        archdsl.from_torch(Branchy(), (4, 8, 8))


def test_a_module_that_holds_weights_and_an_activation_is_one_layer_beside_it():
    class BatchNormAct(nn.BatchNorm2d):  # timm's BatchNormAct2d, in short
        def __init__(self, c: int) -> None:
            super().__init__(c)
            self.act = nn.SiLU()

        def forward(self, x):
            x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                             False, self.momentum, self.eps)
            return self.act(x)

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), BatchNormAct(4))
    torch.manual_seed(0)
    round_trip(net, (3, 8, 8))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def test_a_users_module_class_imports_as_the_op_registered_for_it():
    from archdsl.backends.pytorch.importer import modules, register_module

    class Swish(nn.Module):  # traced, it would be a gate: x * sigmoid(x)
        def forward(self, x):
            return x * torch.sigmoid(x)

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Swish())
    assert "gate {" in archdsl.from_torch(net, (3, 8, 8)).text
    register_module(Swish, "swish", lambda m: {})
    try:
        imported = archdsl.from_torch(net, (3, 8, 8))
        assert "act=swish" in imported.text and check_counts(imported).ok
    finally:
        del modules.MODULES[Swish]


def cli(*args: str, cwd: Path | None = None, monkeypatch=None) -> Result:
    """The command in this process (typer's runner); `cwd` is where a user's module is."""
    from typer.testing import CliRunner

    from archdsl.cli import app
    if cwd is not None:
        monkeypatch.chdir(cwd)
        monkeypatch.syspath_prepend(str(cwd))
    r = CliRunner().invoke(app, list(args))
    return Result(r.exit_code, r.stdout, r.stderr)


def test_cli_imports_a_users_callable_with_arguments(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n"
        "def make(width=8, classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(width, classes))\n")
    out = tmp_path / "net.arch"
    r = cli("import", "mynets:make", "--args", "width=12", "--input", "3x32x32", "-o", str(out),
            cwd=tmp_path, monkeypatch=monkeypatch)
    assert r.returncode == 0, r.stderr
    assert "checked: params" in r.stderr and "MISMATCH" not in r.stderr
    arch = archdsl.load(out)
    assert arch.graph.node(1).attrs["out"] == 12 and arch.graph.input_shape == (3, 32, 32)
    # no input shape: the user is asked for one; nothing is written over the good file
    before = out.read_text()
    r = cli("import", "mynets:make", "-o", str(out))
    assert r.returncode == 1 and "--input" in r.stderr and "Traceback" not in r.stderr
    assert out.read_text() == before


def test_cli_reports_unmapped_ops_and_unknown_sources():
    # every torchvision classifier imports; its segmentation heads upsample, which archdsl lacks
    r = cli("import", "torchvision:lraspp_mobilenet_v3_large", "--input", "3x64x64")
    assert r.returncode == 1 and "interpolate" in r.stderr and "Traceback" not in r.stderr
    r = cli("import", "torchvision:resnet5")
    assert r.returncode == 1 and "did you mean `resnet50`" in r.stderr
    r = cli("import", "resnet50")
    assert r.returncode == 1 and "torchvision:NAME" in r.stderr


def test_timm_source_says_when_timm_is_missing_or_imports_its_models():
    try:
        import timm  # noqa: F401
    except ImportError:
        r = cli("import", "timm:resnet50d")
        assert r.returncode == 1 and "timm is not installed" in r.stderr
        return
    for name in ("resnet50d", "efficientnet_b0", "regnety_008"):
        imported = archdsl.import_model(f"timm:{name}")
        assert check_counts(imported).ok, name
