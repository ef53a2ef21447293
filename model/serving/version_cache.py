"""Local cache of registry versions, `<root>/<name>/<version>`: bounded, and safe for replicas sharing it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from model.serving.artifact import METADATA_FILE
from model.serving.errors import RegistryError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
"""A model name or alias. A name is also a folder of the cache: no separator, no NUL, no `..` start."""
VERSION = re.compile(r"[0-9]{1,18}")
"""MLflow numbers versions 1, 2, 3...; ASCII digits only (`str.isdigit` also accepts '²' and '٣')."""
DEFAULT_KEEP = 3
LOCK_FILE = ".lock"
STAGING_PREFIX = ".download-"
STALE_STAGING_S = 6 * 3600.0
"""A staging folder this old was left by a crashed download (a real one takes minutes at most)."""


def check_name(value: str, what: str = "model name") -> str:
    """`value` when it is a valid name (see `NAME`); RegistryError otherwise."""
    if not NAME.fullmatch(value):
        raise RegistryError(
            f"{what} {value[:200]!r}: names and aliases use letters, digits, '_', '.', '-' "
            "(1 to 128, starting with a letter or digit)"
        )
    return value


def check_version(value: str) -> str:
    """`value` when it is a version number (see `VERSION`); RegistryError otherwise."""
    if not VERSION.fullmatch(value):
        raise RegistryError(f"version {value[:200]!r} is not a version number (1 to 18 ASCII digits)")
    return value


@dataclass(frozen=True)
class VersionCache:
    """Verified versions downloaded once, in `root/<name>/<version>`.

    Several processes may share `root` (replicas on one volume): each downloads into its own
    staging folder in `root` (same filesystem, so the move into place is one atomic rename), and
    the rename and the pruning run under an exclusive `flock` on `root/.lock`. A version folder is
    therefore whole or absent; only verified folders are moved in (the caller verifies first).

    Args:
        root: the cache folder (created on first use).
        keep: versions kept per model after an install, the installed one included (at least 1).
    """

    root: Path
    keep: int = DEFAULT_KEEP

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError(f"keep must be at least 1 (the version just installed), got {self.keep}")

    def folder(self, name: str, version: str) -> Path:
        """Where `name` version `version` lives, once both are checked to be plain folder names.

        Raises:
            RegistryError: a malformed name or version (they come from the store), or a folder that
                resolves outside `root` (a symlink planted in the cache).
        """
        target = self.root / check_name(name) / check_version(version)
        if not target.resolve().is_relative_to(self.root.resolve()):
            raise RegistryError(f"cache folder of {name} version {version} resolves outside {self.root}")
        return target

    @staticmethod
    def has(target: Path) -> bool:
        """Whether a version was moved in at `target` (a renamed folder is whole, so its metadata says so)."""
        return (target / METADATA_FILE).is_file()

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private folder inside `root` for one download, removed afterwards (moved-out content included)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def install(self, folder: Path, name: str, version: str, *, replace: bool = False) -> bool:
        """Moves the verified `folder` to `folder(name, version)`, then prunes `name` to `keep` versions.

        Args:
            folder: a verified download inside a `staging()` folder.
            replace: the cached copy failed verification; drop it instead of keeping it.

        Returns:
            True when `folder` was moved in; False when another process had installed the version
            first: its copy is kept, and the caller verifies it before use.
        """
        target = self.folder(name, version)
        with self._locked():
            placed = replace or not self.has(target)
            if placed:
                if target.exists() or target.is_symlink():  # a copy that failed verification
                    self._discard(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                folder.rename(target)
            self._prune(name, version)
        return placed

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        # Read-only is enough for flock, so replicas running as other users can take the lock too.
        fd = os.open(self.root / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, or by the kernel if this process dies
            yield
        finally:
            os.close(fd)

    def _prune(self, name: str, installed: str) -> None:
        """Under the lock: keeps `installed` and the newest others up to `keep`; clears crashed downloads."""
        others = sorted(
            (p for p in (self.root / name).iterdir() if VERSION.fullmatch(p.name) and p.name != installed),
            key=lambda p: int(p.name),
            reverse=True,
        )
        for old in others[self.keep - 1 :]:
            self._discard(old)
        now = time.time()
        for leftover in self.root.glob(f"{STAGING_PREFIX}*"):
            with contextlib.suppress(OSError):  # another process may remove it at the same moment
                if now - leftover.lstat().st_mtime > STALE_STAGING_S:
                    shutil.rmtree(leftover)

    def _discard(self, path: Path) -> None:
        # Renamed out of the way first (atomic), so no process finds a half-deleted version; files a
        # process still has open stay readable until it closes them.
        trash = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        path.rename(trash / path.name)
        shutil.rmtree(trash, ignore_errors=True)
