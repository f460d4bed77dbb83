"""Writing files so that a crash never leaves a half-written one. Imports nothing from the package."""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block
    succeeds, removed when it fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        if error.errno == errno.ENOSPC:  # said as such, with the real name, not the temporary one
            raise write_error(path) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_error(path: Path, failure: str | None = None) -> OSError:
    """The error for a write at ``path`` that ran out of space (``failure`` None) or failed
    otherwise (``failure`` says how): the previous file is kept."""
    reason = "the disk is full" if failure is None else f"the write failed ({failure})"
    return OSError(errno.ENOSPC if failure is None else errno.EIO,
                   f"{reason}; nothing was replaced (the previous {path.name}, if any, is intact). Free some space "
                   "or choose another --out", str(path))


def write_json(path: str | os.PathLike, data) -> None:
    """``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def check_output(path: str | os.PathLike, kind: str = "folder", flag: str = "--out") -> Path:
    """``path`` if a command can write its ``kind`` (``"folder"`` or ``"file"``) there;
    ValueError naming the path, what is wrong and what to do otherwise.

    Checked before any work starts, and without creating anything: a file in the way of a
    folder (at ``path`` or on the way to it), a folder where a file is wanted, a place that
    cannot be written. Writability is probed with a temporary file in the nearest existing
    folder, because permission bits do not tell (root, read-only mounts).
    """
    import tempfile

    path = Path(path)
    if kind == "folder" and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: is a file, where a folder is needed; choose another {flag} "
                         "or move the file away")
    if kind == "file" and path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder, where a file is needed; give a file name inside it "
                         f"(e.g. {flag} {path / 'model.onnx'})")
    existing = path if kind == "folder" else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {path}: {existing} is a file, so no folder can be made below it; choose another "
                         f"{flag}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot write in {existing} ({error.strerror or error}); choose a place "
                         f"you may write to (e.g. {flag} under your home folder)") from None
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.NAME.tmpPID`` files (and staging folders) that ``atomic_path`` and the
    video labels leave when their process was killed mid-write (the PID no longer running);
    returns what was removed."""
    import shutil

    removed = []
    for tmp in Path(folder).glob(".*.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if not pid.isdigit() or _running(int(pid)):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers cannot be in use: we are not writing them now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


# Which files in a folder segnet wrote (name -> size and mtime when written): a rerun may
# rewrite those, and nothing else, without --overwrite.
OUTPUT_RECORD = ".segnet-outputs.json"


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def record_outputs(paths: list[Path]) -> None:
    """Note ``paths`` (just written) in their folders' record of segnet's own outputs."""
    by_folder: dict[Path, list[Path]] = {}
    for path in paths:
        by_folder.setdefault(Path(path).parent, []).append(Path(path))
    for folder, written in by_folder.items():
        record = _read_record(folder)
        record.update({p.name: _stamp(p) for p in written if p.is_file()})
        write_json(folder / OUTPUT_RECORD, record)


def _read_record(folder: Path) -> dict:
    try:
        record = json.loads((folder / OUTPUT_RECORD).read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def check_overwrites(planned: list[Path], inputs: list[Path], overwrite: bool = False) -> None:
    """ValueError before any work when a planned output would replace one of ``inputs`` or
    an existing file segnet did not write (or that was changed since), unless ``overwrite``.
    A folder that exists where a planned file goes is always refused."""
    sources = {p.resolve() for p in inputs if p.exists()}
    records: dict[Path, dict] = {}
    for path in planned:
        if path.is_dir():
            raise ValueError(f"{path}: is a folder where segnet would write a file; choose another --out")
        if not path.exists() or overwrite:
            continue
        if path.resolve() in sources:
            raise ValueError(f"{path}: is one of the inputs, and segnet would write its result over it; choose "
                             "another --out (or --overwrite to replace it)")
        record = records.setdefault(path.parent, _read_record(path.parent))
        if record.get(path.name) != _stamp(path):
            raise ValueError(f"{path}: exists and was not written by segnet (or was changed since); segnet writes "
                             "over no file of yours: choose another --out, move it away, or --overwrite")
