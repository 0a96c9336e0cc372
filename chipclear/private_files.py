"""Directories and files that only their owner may read: $CHIPCLEAR_HOME, the stores, the logs.

The event store and the dev server's database hold buyers, prices and reviewers' reasons in clear; on a
shared machine the other accounts must not read them. The mode is set as each one is created (os.open's
mode, mkdir's followed by chmod), never through os.umask, which is process-wide and would race with the
threads that create files of their own. What exists already keeps its mode: an operator chose it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """`path` as a directory, created 0700 (its missing parents with the usual mode) if it is not there."""
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIRECTORY_MODE)
    except FileExistsError:
        return path  # another process made it first; it set the mode
    path.chmod(DIRECTORY_MODE)  # mkdir's mode passes through the umask, chmod's does not
    return path


def private_file(path: Path) -> Path:
    """`path`, created empty and 0600 if it is not there, before anyone writes a byte into it."""
    private_dir(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    try:
        os.fchmod(descriptor, FILE_MODE)
    finally:
        os.close(descriptor)
    return path


def open_private_append(path: Path) -> BinaryIO:
    """`path` opened for appending bytes; created 0600 if it is not there (a log)."""
    private_file(path)
    return path.open("ab")
