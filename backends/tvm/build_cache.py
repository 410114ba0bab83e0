"""A cache of compiled libraries on disk, so that measuring latency (`archdsl stats --latency`)
compiles each point of a sweep once, not on every run.

An entry is a library written by `Compiled.export_library` (the library and its manifest,
together and atomically), plus a seal: an HMAC-SHA256 of the manifest's bytes under a secret
that only this user's cache holds (`secret`, 0600, made on first use). A library is code, so an
entry is loaded only when

- its seal verifies: the manifest was written by archdsl for this user, in this cache (an entry
  copied from another cache, or written by anyone who cannot read the secret, does not);
- the manifest's `cache_key` is the key asked for (the same graph, target, batch, dtype, TVM
  and archdsl sources: a stale or foreign entry is rebuilt);
- the library's SHA-256, read from the descriptor it is then loaded from, is the manifest's.

Anything else (a missing half, a truncated library, a changed byte) is a miss: the point is
compiled again and the entry rewritten. Needs TVM only through `Compiled`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import importlib.metadata
import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import archdsl
from archdsl import limits
from archdsl.atomic import atomic_path
from archdsl.backends.tvm import library
from archdsl.backends.tvm.runtime import Compiled
from archdsl.errors import UsageError
from archdsl.formatter import format_graph
from archdsl.inputs import read_regular
from archdsl.ir import Graph

VERSION = 1  # of the entries' layout: a change makes every older entry a miss
SEAL_BYTES = 128


def cache_key(graph: Graph, target: Any, batch: int, dtype: str, seed: int = 0
              ) -> dict[str, Any]:
    """What a build depends on. The graph is its canonical text (the settings comment left
    out: two settings that make the same network share a build); the sources are archdsl's
    own (lowering, schedules), so that a changed schedule is compiled again."""
    import tvm
    text = "\n".join(ln for ln in format_graph(graph).splitlines() if not ln.startswith("#"))
    return {"version": VERSION, "graph_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "target": str(target), "batch": batch, "dtype": dtype, "weights_seed": seed,
            "tvm": tvm.__version__, "archdsl": importlib.metadata.version("archdsl"),
            "sources_sha256": sources_sha256()}


@functools.cache
def sources_sha256() -> str:
    h = hashlib.sha256()
    for root in (Path(archdsl.__file__).parent, Path(library.__file__).parents[1]):
        for path in sorted(root.rglob("*.py")):
            h.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes())
    return h.hexdigest()


class BuildCache:
    """Entries in `root`, one library (+ `.json` manifest, + `.seal`) per key."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self._secret: bytes | None = None

    def path(self, name: str, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        # the architecture's name comes from a spec: only a few safe characters of it
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:40] or "arch"
        return self.root / f"{safe}-{digest[:24]}.so"

    def load(self, path: Path, key: dict[str, Any]) -> tuple[Compiled, dict[str, Any]] | None:
        """The entry at `path` if it verifies (see the module docstring) and holds `key`;
        None for a miss (nothing there, or something not to be trusted)."""
        manifest_file = library.manifest_path(path)
        seal_file = _seal_path(path)
        if not (path.exists() and manifest_file.exists() and seal_file.exists()):
            return None
        try:
            text = read_regular(manifest_file, library.MANIFEST_BYTES, os.O_NOFOLLOW)
            seal = read_regular(seal_file, SEAL_BYTES, os.O_NOFOLLOW).decode().strip()
        except (OSError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(seal, self._seal(text)):
            return None
        with contextlib.suppress(OSError):
            os.utime(seal_file)  # used now: the last to go when the cache is pruned
        manifest = json.loads(text)  # sealed: written by this cache as JSON
        if manifest.get("cache_key") != key:
            return None
        try:
            with library.open_verified(path, verify=False) as checked:
                with open(checked, "rb") as fh:
                    if hashlib.file_digest(fh, "sha256").hexdigest() != \
                            manifest["library_sha256"]:
                        return None
                # the file just hashed: `checked` names the open descriptor, not the path
                return Compiled.load(checked, verify=False), manifest
        except (RuntimeError, OSError):  # LibraryError included: not to be loaded
            return None

    def store(self, path: Path, key: dict[str, Any], compiled: Compiled,
              extra: dict[str, Any]) -> None:
        """Write the entry: library and manifest together (atomically), then the seal; an
        interruption in between leaves an entry without a valid seal, a miss."""
        compiled.export_library(path, {**extra, "cache_key": key})
        text = read_regular(library.manifest_path(path), library.MANIFEST_BYTES, os.O_NOFOLLOW)
        with atomic_path(_seal_path(path)) as tmp:
            tmp.write_text(self._seal(text) + "\n", encoding="ascii")
        self.prune(keep=path)

    def prune(self, keep: Path) -> None:
        """Remove the least recently used entries (a seal's time: when it was written or last
        loaded) while the libraries hold more than limits.MAX_BUILD_CACHE_BYTES; never `keep`."""
        entries = []
        for lib in self.root.glob("*.so"):
            with contextlib.suppress(OSError):
                size = os.lstat(lib).st_size
                used = os.lstat(_seal_path(lib)).st_mtime if _seal_path(lib).exists() else 0.0
                entries.append((used, lib, size))
        total = sum(size for _, _, size in entries)
        for _, lib, size in sorted(entries):
            if total <= limits.MAX_BUILD_CACHE_BYTES:
                break
            if lib != keep:
                for part in (_seal_path(lib), library.manifest_path(lib), lib):
                    with contextlib.suppress(OSError):
                        part.unlink()
                total -= size

    def _seal(self, data: bytes) -> str:
        return hmac.new(self.secret(), data, hashlib.sha256).hexdigest()

    def secret(self) -> bytes:
        """This cache's key: made once, readable by this user only; a key file that others
        could have read or written is refused (its seals prove nothing)."""
        if self._secret is None:
            path = self.root / "secret"
            try:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not os.path.lexists(path):
                    _create_secret(path)
            except OSError as exc:
                raise UsageError(f"cannot use {self.root} as the build cache: "
                                 f"{exc.strerror or exc}", None,
                                 "choose a folder you can write to with --cache-dir") from None
            with _open_private(path) as fd:
                data = os.read(fd, 256)
            if len(data) < 32:
                raise UsageError(f"the build cache's key {path} is damaged", None,
                                 f"remove {self.root} (it only holds cached builds)")
            self._secret = data
        return self._secret


def _seal_path(path: Path) -> Path:
    return path.with_name(path.name + ".seal")


def _create_secret(path: Path) -> None:
    """A new key, in place at once or not at all (link(2) does not replace: of two runs that
    make one together, both read the one that won)."""
    fd, tmp = tempfile.mkstemp(prefix=".secret.", dir=path.parent)  # 0600
    try:
        os.write(fd, secrets.token_bytes(32))
        os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


@contextlib.contextmanager
def _open_private(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UsageError(f"cannot read the build cache's key {path}: {exc.strerror}", None,
                         f"remove {path.parent} or choose another --cache-dir") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise UsageError(f"the build cache's key {path} is not private to you (a regular "
                             "file of yours, mode 0600): its builds cannot be trusted", None,
                             f"remove {path.parent} or choose another --cache-dir")
        yield fd
    finally:
        os.close(fd)
