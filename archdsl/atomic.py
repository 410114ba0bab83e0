"""Output files, written one way: atomically, and never onto something that is not ours.

A failed run never leaves a half-written artifact and never overwrites a good one (the new file
is written beside the target and renamed over it). An output path may come from someone else
(a script, a Makefile, a shared folder), so the target must be a regular file or a new name:
never a symbolic link (renaming over it would replace the link, and a writer that opened it
would write through it), a device, a FIFO or a folder, and never one of the command's own
inputs (the spec, its includes, the weights). `check_output` says so before the work starts
(a compile is minutes long); `atomic_path`/`atomic_paths` check again when they write.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .errors import UsageError

PathLike = str | os.PathLike


def check_output(target: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """`target` as a Path, once it is known to be writable as an output; else a UsageError
    that says why (a link, a device or FIFO, a folder, an input, a folder that cannot be
    written, a path under a file)."""
    path = Path(target)
    name = os.fspath(path)
    if "\0" in name or not name:
        raise UsageError(f"{name!r} is not a usable output path", None)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:  # a file where a folder should be: said below
        st = None
    except OSError as exc:  # ENAMETOOLONG, EACCES...
        raise UsageError(f"cannot write {name}: {exc.strerror}", None) from None
    if st is not None:
        _check_kind(name, st)
        _check_not_input(name, st, inputs)
    _check_folder(path.parent, name)
    return path


def _check_kind(name: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(f"{name} is a symbolic link; archdsl does not write through links",
                         None, "remove the link or choose another output name")
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{name} is a folder", None, "name the file to write inside it")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{name} is not a regular file (a device, FIFO or socket); "
                         "archdsl writes only regular files", None, "choose another output name")


def _check_not_input(name: str, st: os.stat_result, inputs: Iterable[PathLike]) -> None:
    for inp in inputs:
        try:
            other = os.stat(inp)
        except (OSError, ValueError):
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            raise UsageError(f"{name} is one of this command's inputs ({os.fspath(inp)}); "
                             "writing it would destroy it", None, "choose another output name")


def _check_folder(folder: Path, name: str) -> None:
    """The nearest existing ancestor must be a folder this user can write in (the missing
    ones are made when the file is written)."""
    here = folder if str(folder) else Path(".")
    while True:
        try:
            st = os.stat(here)
            break
        except (FileNotFoundError, NotADirectoryError):
            if here.parent == here:
                raise UsageError(f"cannot write {name}: no such folder", None) from None
            here = here.parent
        except OSError as exc:
            raise UsageError(f"cannot write {name}: {exc.strerror}", None) from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"cannot write {name}: {here} is a file, not a folder", None)
    if not os.access(here, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {name}: the folder {here} is not writable", None,
                         "choose an output in a folder you can write to")


@contextlib.contextmanager
def atomic_path(target: PathLike, inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` in one rename,
    on any exception (KeyboardInterrupt and SystemExit included) it is removed and `target` is
    left as it was."""
    with atomic_paths([target], inputs) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(targets: Sequence[PathLike], inputs: Iterable[PathLike] = ()
                 ) -> Iterator[list[Path]]:
    """`atomic_path` for files that belong together (a library and its manifest): all are
    written before any replaces its target; if a rename fails, those already done are undone
    from the old files (kept as hard links until the end)."""
    inputs = list(inputs)
    paths = [check_output(t, inputs) for t in targets]
    tmps: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            # keep the suffix: some writers (torch.export.save) insist on it
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{path.suffix}",
                                       dir=path.parent)
            os.close(fd)
            tmps.append(Path(tmp))
        yield tmps
        for path, tmp in zip(paths, tmps, strict=True):
            check_output(path, inputs)  # again: the run may have been long
            _readable(tmp)
        _replace_all(tmps, paths)
    finally:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _readable(tmp: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions


def _replace_all(tmps: list[Path], paths: list[Path]) -> None:
    backups = [_backup(path) if len(paths) > 1 else None for path in paths]
    done: list[int] = []
    try:
        for i, (tmp, path) in enumerate(zip(tmps, paths, strict=True)):
            os.replace(tmp, path)
            done.append(i)
    except BaseException:
        for i in reversed(done):
            with contextlib.suppress(OSError):
                if backups[i] is not None:
                    os.replace(backups[i], paths[i])
                else:
                    paths[i].unlink()
        raise
    finally:
        for old in backups:
            if old is not None:
                with contextlib.suppress(OSError):
                    old.unlink()


def _backup(path: Path) -> Path | None:
    """A hard link to the file at `path`, to restore it from (None when there is none)."""
    if not path.exists():
        return None
    backup = Path(tempfile.mktemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    try:
        os.link(path, backup)
    except OSError:
        return None
    return backup
