"""The hash-locked requirements agree with pyproject.toml and with each other.

``make lock`` generates them with uv from pyproject.toml: ``requirements.lock`` (the serving
runtime, onnxruntime), ``requirements-litert.lock`` (+ LiteRT), ``requirements-convert.lock``
(building the model) and ``requirements-dev.lock`` (everything: tests and tools), each
constrained by the one before. pip installs them with ``--require-hashes``, so every pinned line
must carry a hash and every transitive package must be in the file.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
# Lock file -> the extras of pyproject.toml it is generated for (besides the dependencies).
LOCKS = {
    "requirements.lock": (),
    "requirements-litert.lock": ("litert",),
    "requirements-convert.lock": ("convert",),
    "requirements-dev.lock": ("litert", "tensorflow", "convert", "dev"),
}
# What the runtime image must not carry: build-time and optional runtimes.
NOT_IN_RUNTIME = {"tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "onnx", "pytest"}
LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)( ;[^\\]*)? \\$")
HASH = re.compile(r"^    --hash=sha256:[0-9a-f]{64}( \\)?$")


def entries(lock: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of one lock file; fails on any line it does not understand."""
    return {name: (version, hashes) for name, (version, hashes, _) in parsed(lock).items()}


def parsed(lock: str) -> dict[str, tuple[str, list[str], Marker | None]]:
    found: dict[str, tuple[str, list[str], Marker | None]] = {}
    current: str | None = None
    for number, line in enumerate((REPO / lock).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            current = None if not line.startswith("    #") else current
            continue
        if line.startswith("    --hash="):
            assert current is not None and HASH.match(line), f"{lock}:{number}: {line!r}"
            found[current][1].append(line.split("sha256:")[1].split()[0])
            continue
        match = LINE.match(line)
        assert match, f"{lock}:{number}: not a pinned, hashed requirement: {line!r}"
        current = canonicalize_name(match.group(1))
        assert current not in found, f"{lock}: {current} twice"
        marker = Marker(match.group(3).strip(" ;")) if match.group(3) else None
        found[current] = (match.group(2), [], marker)
    return found


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        requirements += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return requirements


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pinned_line_carries_a_hash(lock: str) -> None:
    locked = entries(lock)
    assert locked
    for name, (version, hashes) in locked.items():
        assert hashes, f"{lock}: {name}=={version} has no hash"


@pytest.mark.parametrize(("lock", "extras"), LOCKS.items())
def test_the_lock_holds_what_pyproject_declares(lock: str, extras: tuple[str, ...]) -> None:
    locked = entries(lock)
    for requirement in declared(extras):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{lock} lacks {requirement}"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), (
            f"{lock} pins {name}=={locked[name][0]}, pyproject.toml says {requirement}"
        )


def test_direct_dependencies_are_pinned_exactly() -> None:
    # Ranges would let `make lock` move the runtime; only a documented workaround may use one.
    for requirement in declared(tuple(PROJECT["optional-dependencies"])):
        if requirement.name == "backports-strenum":
            continue  # see the comment at the litert extra
        (spec,) = requirement.specifier
        assert spec.operator == "==", requirement


def test_transitive_packages_are_locked_too() -> None:
    runtime = entries("requirements.lock")
    for name in ("flask", "werkzeug", "urllib3", "idna", "certifi", "charset-normalizer"):
        assert name in runtime
    assert not NOT_IN_RUNTIME & runtime.keys()
    assert "ai-edge-litert" in entries("requirements-litert.lock")


def test_the_locks_agree_with_each_other() -> None:
    # Each lock is constrained by the one before it: a package is one version everywhere.
    locks = {lock: entries(lock) for lock in LOCKS}
    order = list(LOCKS)
    for smaller, larger in zip(order, order[1:], strict=False):
        missing = locks[smaller].keys() - locks[larger].keys()
        assert not missing, f"{larger} lacks {sorted(missing)} of {smaller}"
        for name, (version, hashes) in locks[smaller].items():
            assert locks[larger][name] == (version, hashes), f"{name} differs in {larger}"


def test_the_installed_packages_are_the_locked_ones() -> None:
    # Whoever runs the suite does it in a venv made from the dev lock (make venv).
    from importlib.metadata import PackageNotFoundError, version

    wrong = []
    for name, (pinned, _, marker) in parsed("requirements-dev.lock").items():
        if marker is not None and not marker.evaluate():
            continue  # not for this platform (colorama on Windows)
        try:
            installed = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name} not installed")
            continue
        if installed != pinned:
            wrong.append(f"{name} {installed} != {pinned}")
    assert not wrong, wrong


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, made here so the install below needs no index."""
    name, version = "nsfwoid_hashcheck", "1.0"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "VALUE = 1\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
        archive.writestr(f"{info}/RECORD", "".join(f"{m},,\n" for m in [*files, f"{info}/RECORD"]))
    return path


def test_a_changed_hash_fails_the_install(tmp_path: Path) -> None:
    # The flags the venv (Makefile) and the image (Containerfile) install their locks with.
    assert "pip install --quiet --require-hashes -r requirements-dev.lock" in (
        REPO / "Makefile"
    ).read_text(encoding="utf-8")
    assert (REPO / "Containerfile").read_text(encoding="utf-8").count(
        "pip install --require-hashes"
    ) == 2
    wheel = _wheel(tmp_path)
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lock = tmp_path / "test.lock"
    outcomes = {}
    for label, digest in (("locked", good), ("changed", "0" * 64)):
        lock.write_text(f"nsfwoid-hashcheck==1.0 \\\n    --hash=sha256:{digest}\n")
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--isolated", "--no-index",
             "--find-links", str(tmp_path), "--target", str(tmp_path / label),
             "--require-hashes", "--no-deps", "-r", str(lock)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        outcomes[label] = result
    assert outcomes["locked"].returncode == 0, outcomes["locked"].stderr
    assert (tmp_path / "locked" / "nsfwoid_hashcheck.py").is_file()
    assert outcomes["changed"].returncode != 0
    assert "DO NOT MATCH THE HASHES" in outcomes["changed"].stderr
    assert not (tmp_path / "changed" / "nsfwoid_hashcheck.py").exists()
