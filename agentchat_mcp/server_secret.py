"""The server secret (pepper) that keys API-key hashes: a stolen database alone cannot test keys."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from agentchat_mcp.crypto import new_secret


def load_or_create(path: Path) -> bytes:
    """Read the secret, creating it 0600 on first use; refuse a file others can read."""
    path = path.expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then linked into place: a process starting at the
        # same moment sees either no file or a complete one, never an empty file being written.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(new_secret().hex().encode())
            os.link(temporary, path)
        except FileExistsError:  # another process created it first: use theirs
            pass
        finally:
            os.unlink(temporary)
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by other users; run: chmod 600 {path}")
    secret = bytes.fromhex(path.read_text().strip())
    if len(secret) < 32:
        raise ValueError(f"{path} does not hold a valid server secret (64 hex characters)")
    return secret
