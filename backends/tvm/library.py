"""Library files: a compiled network is native code, so it is written with a manifest that holds
its SHA-256, and loaded only once it matches (issue #13).

A library is a shared object: loading it runs its code, ELF constructors included, with the
user's privileges. `archdsl run` used to load any `.so` it was given; a truncated one killed it
with SIGBUS. Now:

- `write` puts the library and its manifest (`NAME.so.json`) in place together (archdsl.atomic):
  no failure leaves a library beside another library's manifest.
- `open_verified` checks the file before anything maps it: a regular file, its manifest's
  `library_sha256` (read from the open file, which is then the file loaded: no one can swap the
  path in between), and an ELF header whose segments lie within the file.

This guards against accidents and tampering with one half of the pair; a library and manifest
made together by someone untrusted are still code from someone untrusted (docs/limits.md).
Needs only the standard library: a deployment with TVM's runtime alone can use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from archdsl.atomic import atomic_paths
from archdsl.inputs import open_regular

MANIFEST_BYTES = 16 << 20  # a few KB, or a CUDA build's kernels (300 KB for ResNet-50)


class LibraryError(RuntimeError):
    """A library that must not be loaded: missing, not a regular file, not matching its
    manifest, or not a complete shared object."""


def manifest_path(library: str | os.PathLike) -> Path:
    """`x.so` → `x.so.json`."""
    library = Path(library)
    return library.with_name(library.name + ".json")


def write(library: str | os.PathLike, export: Callable[[Path, Path], None],
          manifest: dict[str, Any], inputs=()) -> dict[str, Any]:
    """Write a library with `export(tmp_path, workspace)` and its manifest (with the library's
    SHA-256 added) together, atomically. Returns the manifest written."""
    library = Path(library)
    with atomic_paths([library, manifest_path(library)], inputs) as (lib_tmp, man_tmp), \
            tempfile.TemporaryDirectory(prefix="archdsl-link-") as workspace:
        export(lib_tmp, Path(workspace))
        manifest = {**manifest, "library": library.name,
                    "library_sha256": _sha256_file(lib_tmp)}
        man_tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(library: str | os.PathLike) -> dict[str, Any]:
    """The manifest beside `library` (a LibraryError if missing, too large or not JSON)."""
    path = manifest_path(library)
    try:
        with open_regular(path) as fd:
            data = os.read(fd, MANIFEST_BYTES + 1)
    except OSError as exc:
        raise LibraryError(f"cannot load {library}: its manifest {path.name} cannot be read "
                           f"({exc.strerror or exc}); archdsl loads only a library whose "
                           "manifest vouches for it (a library is code)") from None
    if len(data) > MANIFEST_BYTES:
        raise LibraryError(f"cannot load {library}: {path.name} holds more than "
                           f"{MANIFEST_BYTES:,} bytes: not a manifest")
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        raise LibraryError(f"cannot load {library}: {path.name} is not a manifest (not "
                           "JSON)") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("library_sha256"), str):
        raise LibraryError(f"cannot load {library}: {path.name} is not an archdsl manifest "
                           "(no library_sha256)")
    return manifest


@contextlib.contextmanager
def open_verified(library: str | os.PathLike, verify: bool = True,
                  seen: list | None = None) -> Iterator[str]:
    """A path to load `library` from, once checked (see the module docstring); it names the
    very file that was checked. `verify=False` skips the manifest, not the ELF check; `seen`
    receives the manifest read, so that what else the caller takes from it is vouched for by
    the same file."""
    with contextlib.ExitStack() as stack:
        try:
            fd = stack.enter_context(open_regular(Path(library)))
        except OSError as exc:
            raise LibraryError(f"cannot load {library}: {exc.strerror or exc}") from None
        manifest = read_manifest(library) if verify else None
        if seen is not None and manifest is not None:
            seen.append(manifest)
        if manifest is not None and _sha256_fd(fd) != manifest["library_sha256"]:
            raise LibraryError(f"cannot load {library}: it does not match its manifest "
                               f"{manifest_path(library).name} (library_sha256): it was "
                               "changed, truncated or replaced since it was compiled")
        _check_elf(fd, library)
        with _fd_path(fd, library) as path:
            yield path


def _sha256_file(path: Path) -> str:
    with open_regular(path) as fd:
        return _sha256_fd(fd)


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


def _check_elf(fd: int, library) -> None:
    """A complete 64-bit little-endian ELF shared object: every table and loaded segment
    within the file (a truncated file mapped by the loader faults with SIGBUS on first use)."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, 64, 0)
    if head[:4] in _MACH_O:
        return  # macOS: the manifest's hash is the check
    if len(head) < 64 or head[:4] != b"\x7fELF":
        raise LibraryError(f"cannot load {library}: it is not a shared library (no ELF "
                           "header)")
    if head[4] != 2 or head[5] != 1:
        raise LibraryError(f"cannot load {library}: it is not a 64-bit little-endian "
                           "shared library")
    e_type, = struct.unpack_from("<H", head, 16)
    phoff, shoff = struct.unpack_from("<QQ", head, 32)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", head, 54)
    if e_type != 3:  # ET_DYN
        raise LibraryError(f"cannot load {library}: it is not a shared library (ELF type "
                           f"{e_type})")
    if phoff + phnum * phentsize > size or shoff + shnum * shentsize > size or phentsize < 56:
        raise LibraryError(f"cannot load {library}: it is truncated (its ELF tables end "
                           f"past its {size:,} bytes)")
    table = os.pread(fd, phnum * phentsize, phoff)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", table, i * phentsize)
        p_offset, _, _, p_filesz = struct.unpack_from("<QQQQ", table, i * phentsize + 8)
        if p_type == 1 and p_offset + p_filesz > size:  # PT_LOAD
            raise LibraryError(f"cannot load {library}: it is truncated (a segment ends at "
                               f"byte {p_offset + p_filesz:,} of {size:,})")


_MACH_O = (b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf")


@contextlib.contextmanager
def _fd_path(fd: int, library) -> Iterator[str]:
    """A `.so` path that opens the file behind `fd` (TVM picks the loader by suffix): a link
    to /proc/self/fd/N in a private folder. Without /proc (not Linux), the library's path."""
    target = f"/proc/self/fd/{fd}"
    if not os.path.exists(target):
        yield os.fspath(library)
        return
    with tempfile.TemporaryDirectory(prefix="archdsl-load-") as folder:
        link = os.path.join(folder, "library.so")
        os.symlink(target, link)
        yield link
