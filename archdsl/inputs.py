"""Opening the files a command is given: regular files only, read within a size limit.

A path on a command line (a spec, an include, weights, an input array, a tuning database, a
library) may name a FIFO (reading waits forever for a writer), a device (`/dev/zero` never
ends) or a folder. Each is refused here, before anything reads from it: checked with stat, then
opened without blocking (O_NONBLOCK) and checked again on the descriptor, so that what is read
is what was checked (issue #13).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator


class NotARegularFile(OSError):
    """A path that names a folder, FIFO, device or socket."""


class FileTooLarge(OSError):
    """A file larger than what its reader accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(0, f"it holds {size:,} bytes, more than {limit:,}")
        self.size, self.limit = size, limit


def kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "it is a folder"
    if stat.S_ISLNK(mode):
        return "it is a symbolic link"
    if stat.S_ISFIFO(mode):
        return "it is a FIFO (named pipe), not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device, not a file"
    return "it is not a regular file"


def check_regular(path: str | os.PathLike, follow: bool = True) -> os.stat_result:
    """The stat of `path` (of the link itself with `follow=False`), if it is a regular file;
    else NotARegularFile."""
    st = os.stat(path) if follow else os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(0, kind(st.st_mode))
    return st


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, flags: int = 0) -> Iterator[int]:
    """A read-only descriptor on the regular file at `path` (`flags` added, e.g. O_NOFOLLOW),
    closed on exit."""
    check_regular(path, follow=not flags & getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(0, kind(mode))
        yield fd
    finally:
        os.close(fd)


def read_regular(path: str | os.PathLike, limit: int, flags: int = 0) -> bytes:
    """The bytes of the regular file at `path`, if there are at most `limit` of them."""
    with open_regular(path, flags) as fd:
        size = os.fstat(fd).st_size
        if size > limit:
            raise FileTooLarge(size, limit)
        chunks, total = [], 0
        while total <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - total))):
            chunks.append(chunk)
            total += len(chunk)
    if total > limit:  # it grew while being read
        raise FileTooLarge(total, limit)
    return b"".join(chunks)
