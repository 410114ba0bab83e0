"""The tuning database folder: MetaSchedule's two JSON files, archdsl's notes, a lock, a log.

Databases are copied between machines (tune on the GPU machine, copy the folder), so a folder
may come from someone else and hold anything: symbolic links planted to make a write land on
another file, a FIFO, a file of gigabytes, notes edited by hand (issue #13). Hence:

- Applying (`--tuning-db DIR` without `--tune`) never writes to DIR: its files, which must be
  regular files owned by this user, are read without following links (O_NOFOLLOW) into a
  private folder, a torn last line is dropped there, and MetaSchedule reads that copy.
- Tuning (`--tune`) writes to DIR as MetaSchedule does, after the same checks on every file it
  will write (records, lock, log, notes): one tuning job at a time holds the lock.
- archdsl's notes are checked as data: a corrupt `archdsl_defaults.json` is an error when
  applying, never a reason to prefer a tuned kernel (it is measured again when tuning).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from archdsl.inputs import FileTooLarge, kind, read_regular

FILES = ("database_workload.json", "database_tuning_record.json")
# archdsl's notes beside them, keyed by workload (structural hash): the workloads whose
# search ran out of new schedules before its budget (a kernel with a one-point space would be
# retried every run), and the measured time of archdsl's default schedule of each workload
USED_UP = "archdsl_used_up.json"
DEFAULTS = "archdsl_defaults.json"
LOG = Path("logs") / "tuning.log"
MAX_FILE_BYTES = 1 << 30  # a record is about 2 KB: half a million of them
MAX_NOTE_BYTES = 16 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class TuningError(RuntimeError):
    """A tuning request that cannot be carried out (a missing, busy or unsafe database)."""


def present(path: Path) -> bool:
    """Whether the folder holds a database (its files exist, of whatever kind)."""
    return all(os.path.lexists(path / name) for name in FILES)


def check_file(file: Path) -> None:
    """A file of the database must be a regular file owned by this user (not a link)."""
    try:
        st = os.lstat(file)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise TuningError(f"cannot use {file}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise TuningError(f"{file} is a symbolic link; a tuning database holds only regular "
                          "files (a copied database may hold links planted to overwrite "
                          "other files): remove it")
    if not stat.S_ISREG(st.st_mode):
        raise TuningError(f"{file}: {kind(st.st_mode)}; a tuning database holds only "
                          "regular files")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise TuningError(f"{file} belongs to another user (uid {st.st_uid}); copy the "
                          "database to a folder of your own to use it")


def read(file: Path, limit: int) -> bytes | None:
    """The bytes of a database file (None if missing), checked by `check_file` and read
    through a descriptor opened without following links."""
    check_file(file)
    try:
        return read_regular(file, limit, _NOFOLLOW)
    except FileNotFoundError:
        return None
    except FileTooLarge as exc:
        raise TuningError(f"{file} holds {exc.size:,} bytes, more than a tuning database "
                          f"file may ({limit:,})") from None
    except OSError as exc:
        raise TuningError(f"cannot read {file}: {exc.strerror or exc}") from None


def without_torn_tail(data: bytes) -> bytes:
    """`data` less a last line cut short by a killed process: every complete line of the
    files is a whole workload or trial."""
    end = data.rstrip(b"\n").rfind(b"\n") + 1
    try:
        json.loads(data[end:] or b"0")
    except ValueError:
        return data[:end]
    return data


@contextlib.contextmanager
def applying(path: Path, open_db: Callable[[Path], Any]) -> Iterator[Any]:
    """The database in `path` to apply, opened with `open_db(folder)` on a private copy:
    `path` is only read (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="archdsl-tuning-") as private:
        for name in FILES:
            data = read(path / name, MAX_FILE_BYTES)
            if data is None:
                raise TuningError(f"no tuning database at {path} ({name} is missing)")
            (Path(private) / name).write_bytes(without_torn_tail(data))
        yield open_db(Path(private))


@contextlib.contextmanager
def tuning(path: Path) -> Iterator[None]:
    """Hold `path` to tune into it: its lock taken (one tuning job per database), every file
    it will write checked (`check_file`), a torn last line dropped."""
    with locked(path):
        for name in (*FILES, USED_UP, DEFAULTS):
            check_file(path / name)
        _check_log(path)
        for name in FILES:
            data = read(path / name, MAX_FILE_BYTES)
            if data is not None and len(repaired := without_torn_tail(data)) < len(data):
                fd = os.open(path / name, os.O_WRONLY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
                try:
                    os.ftruncate(fd, len(repaired))
                finally:
                    os.close(fd)
        yield


def _check_log(path: Path) -> None:
    folder = path / LOG.parent
    if os.path.lexists(folder) and (os.path.islink(folder) or not folder.is_dir()):
        raise TuningError(f"{folder} is not a folder (a symbolic link?); remove it")
    check_file(path / LOG)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One tuning job per database at a time: two would number their workloads apart. The
    lock file is opened without following links and never truncated."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        check_file(path / ".lock")
        fd = os.open(path / ".lock", os.O_WRONLY | os.O_CREAT | _NOFOLLOW |
                     getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise TuningError(f"cannot use {path} as a tuning database: "
                          f"{exc.strerror or exc}") from None
    try:
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no lock
            pass
        except OSError:
            raise TuningError(f"the tuning database {path} is in use by another tuning "
                              "job") from None
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- archdsl's notes

def read_defaults(path: Path, strict: bool) -> dict[str, dict[str, Any]]:
    """archdsl_defaults.json: workload key → {"schedule": key, "seconds": time}. Missing: {}.
    Corrupt (not JSON, wrong types, a time that is not a finite number ≥ 0): a TuningError
    with `strict` (applying: a wrong time would pick the slower kernel), else {} (tuning
    measures them again)."""
    value = _read_note(path, DEFAULTS)
    if value is None:
        return {}
    ok = isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("schedule"), str)
        and isinstance(v.get("seconds"), (int, float)) and not isinstance(v["seconds"], bool)
        and math.isfinite(v["seconds"]) and v["seconds"] >= 0 for k, v in value.items())
    if ok:
        return value
    if strict:
        raise TuningError(f"{path / DEFAULTS} is corrupt (it holds the measured times of "
                          "archdsl's default schedules); delete it and tune again (--tune N) "
                          "to measure them again")
    return {}


def read_used_up(path: Path) -> set[str]:
    """archdsl_used_up.json: workload keys (anything else: none, so they are tuned again)."""
    value = _read_note(path, USED_UP)
    ok = isinstance(value, list) and all(isinstance(k, str) for k in value)
    return set(value) if ok else set()


def _read_note(path: Path, name: str) -> Any:
    data = read(path / name, MAX_NOTE_BYTES)
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return ...  # not JSON: neither None nor a valid note


def write_note(path: Path, name: str, value: Any) -> None:
    from archdsl.atomic import atomic_path
    with atomic_path(path / name) as tmp:
        tmp.write_text(json.dumps(value, indent=0, sort_keys=True) + "\n")
