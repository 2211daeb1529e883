"""Whether a folder takes a new file, known before any call is paid for.

An output's save (a mapped file, a Delta folder, the local warehouse's write-ahead log) makes new
files in its folders after the calls. A lock file an earlier run left there may still open where
no new file can be made, so the lock proves nothing: a file made and removed is the truth on any
file system (modes, ACLs, read-only mounts).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def try_writing(folder: Path, name: str) -> None:
    """Make a file in `folder` and remove it, or raise OSError."""
    handle, probe = tempfile.mkstemp(dir=folder, prefix=f".{name}.probe-")
    os.close(handle)
    os.unlink(probe)
