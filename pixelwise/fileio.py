"""Atomic file writes: a crash or a kill never leaves a half-written checkpoint or output."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

# The process's file-creation mask, read once (reading it means setting it, which is not thread-safe later).
UMASK = os.umask(0)
os.umask(UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    The rename is atomic on POSIX, so readers see either the old file or the new one, never a mix.
    On error the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The name cut short: a file name near the file system's limit (255 bytes) must still get its temporary.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions any new file gets here.
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a folder outputs can be written into, checked before any work starts.

    It may exist as a folder or not exist yet; a file standing at it or at a parent, or a folder that
    cannot be written, is a ValueError naming ``option`` (the command-line flag) and the path.
    """
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise ValueError(f"{option} {path}: {existing} is not writable")
            break
    return path


# What a saved model (config.json + model.safetensors) and a training run (config.yaml, metrics.jsonl, state/)
# are made of: an output written over one of them would destroy the model or the run it belongs to.
RUN_FILES = frozenset({"config.json", "model.safetensors", "config.yaml", "metrics.jsonl"})


def run_folder_of(path: Path) -> Path | None:
    """The saved model or run folder ``path`` would be written into (its folder, or the run of a ``state/``
    folder), or None."""
    folder = path.resolve().parent
    for candidate in (folder, folder.parent) if folder.name == "state" else (folder,):
        if any((candidate / name).is_file() for name in RUN_FILES):
            return candidate
    return None


def check_output_file(path: str | os.PathLike, option: str, kinds: tuple[str, ...] = ()) -> Path:
    """``path`` as a file that can be written (atomically), checked before any work starts: not a folder, in a
    writable folder, not a file of a saved model or run (its weights, card, config, metrics, state or plots),
    and, where a file already stands there, one of the ``kinds`` (suffixes) written: an export may replace an
    older export, never an image, a mask or anything else of the user's."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name inside it")
    check_output_dir(path.parent, option)
    run = run_folder_of(path)
    if run is not None and (path.name in RUN_FILES or path.exists() or path.resolve().parent != run):
        raise ValueError(f"{option} {path} would replace a file of the saved model or run in {run}; "
                         "give a file name of its own")
    if path.exists() and path.suffix.lower() not in kinds:
        raise ValueError(f"{option} {path} exists and is no {' or '.join(kinds) or 'output'} file: it would be "
                         "replaced; give a file name of its own")
    return path


def strict_json(value: Any) -> Any:
    """``value`` with every NaN float replaced by None, so that ``json.dump`` writes strict JSON (null, not NaN):
    scores of classes absent from a split are NaN, and most JSON readers outside Python refuse NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    return value
