"""The LALR tables of grammar.lark, shipped with the package.

Building the tables takes longer than the rest of a small `archdsl check`, so they are built
once, by `python -m archdsl.grammar_tables`, and committed as data: `grammar_tables.json`,
Lark's serialized form (as its standalone generator writes it) in JSON. They are never cached
at run time: Lark's own `cache=True` unpickles a file with a predictable name in the temporary
folder, which anyone on the machine can plant (issue #13); JSON is only ever data.

The tables carry the SHA-256 of the grammar (and the Lark version) they were made from; when
grammar.lark has changed since (a developer editing the grammar), the parser is built from the
grammar instead, slower but correct, and tests/core/test_security.py fails until the tables are
written again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import lark
from lark import Lark
from lark.grammar import Rule
from lark.lexer import TerminalDef

GRAMMAR = Path(__file__).with_name("grammar.lark")
TABLES = Path(__file__).with_name("grammar_tables.json")
OPTIONS = {"parser": "lalr", "propagate_positions": True, "maybe_placeholders": True}


def stamp() -> dict[str, str]:
    """What the tables must have been made from: this grammar, this Lark."""
    return {"grammar_sha256": hashlib.sha256(GRAMMAR.read_bytes()).hexdigest(),
            "lark": lark.__version__}


def build() -> Lark:
    """The parser, built from grammar.lark (no cache)."""
    return Lark(GRAMMAR.read_text(encoding="utf-8"), **OPTIONS)


def read() -> dict[str, Any] | None:
    """The shipped tables, if they are there and made from the current grammar by this Lark."""
    try:
        tables = json.loads(TABLES.read_text(encoding="utf-8"), object_hook=_decode)
    except (OSError, ValueError):
        return None
    return tables if tables.get("stamp") == stamp() else None


def load() -> Lark:
    """The parser from the shipped tables, or built from the grammar when they are stale."""
    tables = read()
    if tables is None:
        return build()
    return Lark._load_from_dict(tables["data"], tables["memo"])


def source() -> str:
    """The text of grammar_tables.json for the current grammar."""
    data, memo = build().memo_serialize([TerminalDef, Rule])
    return json.dumps(_encode({"stamp": stamp(), "data": data, "memo": memo}),
                      separators=(",", ":")) + "\n"


# JSON has neither tuples nor non-string keys; Lark's tables have both (parse states are
# numbered): tag them so that decoding gives back exactly what Lark serialized.
def _encode(o: Any) -> Any:
    if isinstance(o, dict):
        if all(isinstance(k, str) for k in o):
            return {k: _encode(v) for k, v in o.items()}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in o.items()]}
    if isinstance(o, tuple):
        return {"__tuple__": [_encode(x) for x in o]}
    if isinstance(o, list):
        return [_encode(x) for x in o]
    return o


def _decode(o: dict) -> Any:
    if len(o) == 1 and "__items__" in o:
        return dict(o["__items__"])
    if len(o) == 1 and "__tuple__" in o:
        return tuple(o["__tuple__"])
    return o


def main() -> None:
    TABLES.write_text(source(), encoding="utf-8")
    sys.stdout.write(f"wrote {TABLES.name} for grammar {stamp()['grammar_sha256'][:12]}\n")


if __name__ == "__main__":
    main()
