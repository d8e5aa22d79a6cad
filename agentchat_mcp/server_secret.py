"""The server secret (pepper) that keys API-key hashes: a stolen database alone cannot test keys.

Rotation without locking anyone out: the secret file is a keyring, newest version first::

    # agentchat-mcp server secrets, newest first ...
    v2 9f3c...
    v1 41aa...

A file holding one bare hex line (as first created) is version 1. A stored hash names its version:
``v2$<hex>`` (version 1 hashes are bare hex, as before rotation existed). Authentication tries the
hash under every version; a hit under an old version is re-hashed under the newest, so principals
move to the new secret as they sign in, and ``secrets prune`` drops versions nobody uses any more.
Servers that started before a rotation notice the changed file on their next miss and reload it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agentchat_mcp.crypto import hash_api_key, new_secret

HEADER = (
    "# agentchat-mcp server secrets, newest first. Older versions only verify API keys hashed\n"
    "# before a rotation; `agentchat-mcp secrets status` shows which versions are still in use.\n"
)
MIN_SECRET_BYTES = 32


def format_hash(version: int, digest: str) -> str:
    """How a hash is stored: version 1 bare (as before rotation existed), later ones 'v<N>$<hex>'."""
    return digest if version == 1 else f"v{version}${digest}"


def version_of(stored_hash: str) -> int:
    """The secret version a stored hash was made with."""
    if stored_hash.startswith("v") and "$" in stored_hash:
        return int(stored_hash[1 : stored_hash.index("$")])
    return 1


@dataclass(frozen=True)
class Keyring:
    """Every version of the server secret, newest first; `path` lets a running server reload it."""

    versions: tuple[tuple[int, bytes], ...]
    path: Path | None = None
    stamp: tuple[int, int] | None = field(default=None, compare=False)  # (mtime_ns, size) when read

    def __post_init__(self) -> None:
        if not self.versions:
            raise ValueError("a keyring needs at least one secret")

    def __repr__(self) -> str:  # never print secrets
        return f"Keyring(versions={[v for v, _ in self.versions]}, path={self.path})"

    @classmethod
    def single(cls, secret: bytes) -> Keyring:
        """One secret, version 1 (what a bare `bytes` secret always meant)."""
        return cls(((1, secret),))

    @property
    def current_version(self) -> int:
        return self.versions[0][0]

    def hash(self, api_key: str) -> str:
        """The stored form of `api_key` under the newest secret."""
        version, secret = self.versions[0]
        return format_hash(version, hash_api_key(secret, api_key))

    def candidates(self, api_key: str) -> list[str]:
        """The stored form of `api_key` under every version, newest first."""
        return [format_hash(v, hash_api_key(s, api_key)) for v, s in self.versions]

    def reloaded(self) -> Keyring:
        """This keyring, or a fresh read of its file if the file changed since (cheap: one stat)."""
        if self.path is None:
            return self
        try:
            stamp = _stamp(self.path)
        except OSError:
            return self
        return self if stamp == self.stamp else load_keyring(self.path)

    def fingerprint(self, version: int) -> str:
        """A short, non-reversible tag of one version (for status output), never the secret."""
        secret = dict(self.versions)[version]
        return hmac.new(secret, b"agentchat-secret-fingerprint", hashlib.sha256).hexdigest()[:12]


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size)


def parse(text: str, path: Path | None = None) -> tuple[tuple[int, bytes], ...]:
    """Versions from the file's text; a single bare hex line is version 1."""
    where = path or "the secret file"
    versions: list[tuple[int, bytes]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            if len(parts) == 1:
                version, secret = 1, bytes.fromhex(parts[0])
            elif len(parts) == 2 and parts[0].startswith("v"):
                version, secret = int(parts[0][1:]), bytes.fromhex(parts[1])
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"{where}, line {number}: expected 'v<N> <64 hex characters>'") from None
        if len(secret) < MIN_SECRET_BYTES or version < 1:
            raise ValueError(f"{where}, line {number}: not a valid server secret (64 hex characters)")
        versions.append((version, secret))
    if not versions:
        raise ValueError(f"{where} does not hold a valid server secret (64 hex characters)")
    if len({v for v, _ in versions}) != len(versions):
        raise ValueError(f"{where} names a secret version twice")
    return tuple(sorted(versions, key=lambda item: -item[0]))


def render(versions: tuple[tuple[int, bytes], ...]) -> str:
    return HEADER + "".join(f"v{v} {s.hex()}\n" for v, s in versions)


def _create(path: Path) -> None:
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


def load_keyring(path: Path) -> Keyring:
    """Read the keyring, creating it 0600 on first use; refuse a file others can read."""
    path = path.expanduser()
    if not path.exists():
        _create(path)
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by other users; run: chmod 600 {path}")
    stamp = _stamp(path)
    return Keyring(parse(path.read_text(), path), path=path, stamp=stamp)


def load_or_create(path: Path) -> bytes:
    """The newest secret (for callers that need only one; Identity takes the whole keyring)."""
    return load_keyring(path).versions[0][1]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize rotations: two at once would each write a different 'newest' secret."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no concurrent rotation protection
        yield
        return
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write(path: Path, versions: tuple[tuple[int, bytes], ...]) -> None:
    """Replace the file atomically (temp file, fsync, rename), keeping mode 0600."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(render(versions))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def rotate(path: Path) -> Keyring:
    """Add a new newest secret; every older one is kept, so every existing API key still works."""
    path = path.expanduser()
    with _locked(path):
        current = load_keyring(path)
        versions = ((current.current_version + 1, new_secret()), *current.versions)
        _write(path, versions)
    return load_keyring(path)


def prune(path: Path, in_use: set[int]) -> tuple[Keyring, list[int]]:
    """Drop old versions that no stored hash uses (the newest always stays); returns the dropped ones."""
    path = path.expanduser()
    with _locked(path):
        current = load_keyring(path)
        keep = tuple((v, s) for v, s in current.versions if v == current.current_version or v in in_use)
        dropped = [v for v, _ in current.versions if v not in dict(keep)]
        if dropped:
            _write(path, keep)
    return load_keyring(path), dropped
