"""The TextMate grammar in editors/ stays in step with the language.

Editors run TextMate regexes with Oniguruma; the grammar keeps to the subset Python's `re`
also accepts, so a small TextMate tokenizer here (earliest match wins, ties go to the end
pattern and then to the first rule, begin/end rules nest across lines) runs it over the zoo.
"""

from __future__ import annotations

import dataclasses
import json
import re
from functools import cache
from pathlib import Path

import pytest

from archdsl import syntax as S
from archdsl.parser import parse

ROOT = Path(__file__).parents[2]
GRAMMAR_PATH = ROOT / "editors" / "archdsl.tmLanguage.json"
SPECS = sorted((ROOT / "specs").glob("*.arch"))
LAYER_SCOPE = "entity.name.function.layer.archdsl"


@cache
def grammar() -> dict:
    return json.loads(GRAMMAR_PATH.read_text(encoding="utf-8"))


def all_rules(g: dict) -> list[dict]:
    out = []

    def walk(rule: dict) -> None:
        out.append(rule)
        for sub in rule.get("patterns", []):
            walk(sub)

    for rule in g["repository"].values():
        walk(rule)
    for rule in g["patterns"]:
        walk(rule)
    return out


def language_keywords() -> set[str]:
    text = (ROOT / "archdsl" / "grammar.lark").read_text(encoding="utf-8")
    text = re.sub(r"//[^\n]*", "", text)
    return set(re.findall(r'"([A-Za-z_][A-Za-z_0-9]*)"', text))


# ---------------------------------------------------------------- a small TextMate engine

@dataclasses.dataclass
class Token:
    line: int  # 1-based
    start: int  # 0-based column
    end: int
    scope: str

    def text(self, lines: list[str]) -> str:
        return lines[self.line - 1][self.start:self.end]


@cache
def _rx(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _expand(patterns: list[dict], repo: dict) -> list[dict]:
    out: list[dict] = []
    for p in patterns:
        if "include" in p:
            rule = repo[p["include"].lstrip("#")]
            if "match" in rule or "begin" in rule:
                out.append(rule)
            else:
                out += _expand(rule["patterns"], repo)
        elif "match" in p or "begin" in p:
            out.append(p)
        else:
            out += _expand(p["patterns"], repo)
    return out


def _captures(m: re.Match, caps: dict, line: int, name: str | None, out: list[Token]) -> None:
    if name:
        out.append(Token(line, m.start(), m.end(), name))
    for k, v in caps.items():
        g = int(k)
        if m.group(g) is not None and "name" in v:
            out.append(Token(line, m.start(g), m.end(g), v["name"]))


def tokenize(lines: list[str], g: dict | None = None) -> list[Token]:
    g = g or grammar()
    repo = g["repository"]
    top = _expand(g["patterns"], repo)
    stack: list[dict] = []
    tokens: list[Token] = []
    for ln, line in enumerate(lines, 1):
        pos = 0
        for _ in range(10_000):
            patterns = _expand(stack[-1].get("patterns", []), repo) if stack else top
            best: tuple | None = None
            if stack:
                m = _rx(stack[-1]["end"]).search(line, pos)
                if m:
                    best = (m.start(), m, None)
            for p in patterns:
                m = _rx(p.get("match") or p["begin"]).search(line, pos)
                if m and (best is None or m.start() < best[0]):
                    best = (m.start(), m, p)
            if best is None:
                break
            _, m, p = best
            if p is None:  # the end of the innermost begin/end rule
                rule = stack.pop()
                _captures(m, rule.get("endCaptures", rule.get("captures", {})), ln, None,
                          tokens)
                pos = m.end()
            elif "match" in p:
                _captures(m, p.get("captures", {}), ln, p.get("name"), tokens)
                pos = m.end() if m.end() > m.start() else m.end() + 1
            else:
                _captures(m, p.get("beginCaptures", p.get("captures", {})), ln, p.get("name"),
                          tokens)
                stack.append(p)
                pos = m.end()
            if pos > len(line):
                break
        else:
            raise AssertionError(f"tokenizer loops on line {ln}: {line!r}")
    return tokens


# ---------------------------------------------------------------- tests

def test_grammar_is_json_with_the_expected_header() -> None:
    g = grammar()
    assert g["scopeName"] == "source.archdsl"
    assert g["fileTypes"] == ["arch"]
    assert g["patterns"]
    for rule in all_rules(g):
        for key in ("include",):
            if key in rule:
                assert rule[key].lstrip("#") in g["repository"], rule[key]


def test_every_regex_compiles_with_python_re() -> None:
    for rule in all_rules(grammar()):
        for key in ("match", "begin", "end"):
            if key in rule:
                re.compile(rule[key])  # raises on Oniguruma-only syntax


def test_every_language_keyword_is_highlighted_as_a_keyword() -> None:
    keywords = language_keywords()
    # the statement keywords and the expression words must both be collected
    assert {"arch", "block", "include", "input", "defaults", "let", "residual", "shortcut",
            "concat", "add", "mul", "gate", "dense", "if", "else"} <= keywords
    keyword_rules = [r for r in all_rules(grammar())
                     if r.get("name", "").startswith("keyword.") and "match" in r]
    for kw in sorted(keywords):
        assert any((m := re.search(r["match"], f" {kw} ")) and m.group(0) == kw
                   for r in keyword_rules), f"keyword `{kw}` is not highlighted"


def test_keywords_highlight_in_context() -> None:
    lines = ['include "vgg_common.arch"', "arch vgg_e(classes = 1000)", "input 3x224x224",
             "defaults act=relu", "residual { conv3-64 } shortcut(down) { conv1-64 }",
             "concat { conv1-64 | maxpool3/1 pad=1 }", "gate { gap; conv1-16 }",
             "let n = 2 if deep else 3", "assert params <= 5M"]
    toks = tokenize(lines)
    kw = {t.text(lines) for t in toks if t.scope == "keyword.control.archdsl"}
    assert {"include", "arch", "input", "defaults", "residual", "shortcut", "concat", "gate",
            "let", "assert"} <= kw
    words = {t.text(lines) for t in toks if t.scope == "keyword.operator.word.archdsl"}
    assert words == {"if", "else"}
    assert any(t.scope == "constant.numeric.archdsl" and t.text(lines) == "5M" for t in toks)


def test_paper_tokens_are_split_into_name_and_numbers() -> None:
    lines = ["conv1: conv7-64/2 norm=bn act=relu   # stem", "conv3-64 x2; maxpool3/2 pad=1",
             "FC-4096; dropout(0.4); FC-{classes} act=none; soft-max",
             "layer2: stage(128, layers[1], 2) x{n - 1}"]
    toks = tokenize(lines)

    def scoped(line: int, scope: str) -> list[str]:
        return [t.text(lines) for t in toks if t.line == line and t.scope == scope]

    assert scoped(1, "entity.name.tag.label.archdsl") == ["conv1"]
    assert scoped(1, LAYER_SCOPE) == ["conv"]
    assert scoped(1, "constant.numeric.kernel.archdsl") == ["7"]
    assert scoped(1, "constant.numeric.channels.archdsl") == ["64"]
    assert scoped(1, "constant.numeric.stride.archdsl") == ["2"]
    assert scoped(1, "entity.other.attribute-name.archdsl") == ["norm", "act"]
    assert scoped(1, "support.constant.attribute-value.archdsl") == ["bn", "relu"]
    assert scoped(1, "comment.line.number-sign.archdsl") == ["# stem"]
    assert scoped(2, LAYER_SCOPE) == ["conv", "maxpool"]
    assert scoped(2, "keyword.operator.repetition.archdsl") == ["x"]
    assert scoped(2, "constant.numeric.repetition.archdsl") == ["2"]
    assert scoped(3, LAYER_SCOPE) == ["FC", "dropout", "FC", "soft-max"]
    assert "classes" in scoped(3, "variable.other.archdsl")
    assert scoped(4, LAYER_SCOPE) == ["stage"]
    assert "layers" in scoped(4, "variable.other.archdsl")  # an argument, not a layer
    assert scoped(4, "keyword.operator.repetition.archdsl") == ["x"]


def _spec_layers(node, out: list[S.Layer]) -> list[S.Layer]:
    if isinstance(node, S.Layer):
        out.append(node)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            if f.name not in ("span", "name_span", "label_span"):
                _spec_layers(getattr(node, f.name), out)
    elif isinstance(node, (list, tuple)):
        for x in node:
            _spec_layers(x, out)
    return out


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_layer_of_the_zoo_is_a_layer_token(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    toks = tokenize(lines)
    layer_at = {(t.line, t.start): t for t in toks if t.scope == LAYER_SCOPE}

    # every layer and block call the parser finds starts a layer token
    module = parse(text, str(path))
    found = _spec_layers(module, [])
    assert found or not module.blocks and all(isinstance(a, S.ArchAlias) for a in module.archs)
    for layer in found:
        sp = layer.name_span
        tok = layer_at.get((sp.line, sp.col - 1))
        assert tok is not None, f"{path.name}:{sp.line}:{sp.col}: `{layer.name}` not a layer token"
        name = lines[sp.line - 1][sp.col - 1:sp.end_col - 1]
        expected = name if name.lower() == "soft-max" else re.sub(r"\d+(x\d+)?$", "", name)
        assert tok.text(lines) == expected, (path.name, sp.line, name)

    # every paper token written like conv3-64, FC-4096 or maxpool3/2 outside comments is
    # covered: the name by the layer scope, the numbers by numeric scopes
    skip = [t for t in toks if t.scope.startswith(("comment.", "string."))]
    numeric = {(t.line, t.start, t.end) for t in toks if t.scope.startswith("constant.numeric")}
    for ln, line in enumerate(lines, 1):
        for m in re.finditer(r"\b([A-Za-z_]+)(\d+(?:x\d+)?)?(?:-(\d+))?(?:/(\d+))?\b", line):
            if not (m.group(3) or m.group(4)):
                continue
            if any(t.line == ln and t.start <= m.start() < t.end for t in skip):
                continue
            tok = layer_at.get((ln, m.start()))
            assert tok is not None and tok.text(lines) == m.group(1), (path.name, ln, m[0])
            for g in (2, 3, 4):
                if m.group(g):
                    assert (ln, m.start(g), m.end(g)) in numeric, (path.name, ln, m[0], g)


def test_vscode_extension_points_at_the_grammar() -> None:
    pkg = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text())
    (lang,) = pkg["contributes"]["languages"]
    (gram,) = pkg["contributes"]["grammars"]
    assert lang["extensions"] == [".arch"]
    assert gram["language"] == lang["id"]
    assert gram["scopeName"] == grammar()["scopeName"]
    assert gram["path"].endswith("archdsl.tmLanguage.json")
    conf = json.loads((ROOT / "editors" / "vscode" / "language-configuration.json").read_text())
    assert conf["comments"]["lineComment"] == "#"


def test_new_notation_is_highlighted() -> None:
    lines = ["inline block row(c) { conv1x7-{c} }", "block1-0: conv-64 k=1x7 pad=0,3",
             "x: basic_conv(c7, 7x1)"]
    toks = tokenize(lines)

    def scoped(line: int, scope: str) -> list[str]:
        return [t.text(lines) for t in toks if t.line == line and t.scope == scope]

    assert scoped(1, "keyword.control.archdsl") == ["inline", "block"]
    assert scoped(1, LAYER_SCOPE) == ["conv"]
    assert scoped(1, "constant.numeric.kernel.archdsl") == ["1x7"]
    assert scoped(2, "entity.name.tag.label.archdsl") == ["block1-0"]
    assert scoped(2, LAYER_SCOPE) == ["conv"]
    assert "1x7" in scoped(2, "constant.numeric.archdsl")
    assert "7x1" in scoped(3, "constant.numeric.archdsl")
