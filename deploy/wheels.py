"""The wheels a release's lock needs, prepared on the controller for the servers' Python and
CPU: the servers never reach a package index.

A package that publishes only an sdist is downloaded as that sdist (its hash checked against
the lock) and built into a wheel here, when it is pure Python; the lock the servers install
from then also accepts that wheel's hash. A package that needs compiling is refused by name:
a wheel built on this machine could not be trusted to run on the servers.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .errors import CommandFailed, DeployError

SERVER_LOCK = "requirements.lock"  # in the tarball: what the servers install from
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*===?\s*([^\s;\\]+)")
_NO_WHEEL = re.compile(r"(?:No matching distribution found for|satisfies the requirement)\s+([A-Za-z0-9][A-Za-z0-9._-]*)")
_PURE = re.compile(r"-py[23](\.py3)?-none-any\.whl$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def entries(lock_text: str) -> dict[str, str]:
    """Normalized package name -> its whole entry (the pin and its --hash lines) in a lock file."""
    found: dict[str, str] = {}
    current: list[str] = []
    for line in lock_text.splitlines():
        if current:
            current.append(line)
        elif (match := _REQUIREMENT.match(line)):
            current = [line]
            name = normalize(match.group(1))
        if current and not line.rstrip().endswith("\\"):
            found[name] = "\n".join(current) + "\n"
            current = []
    return found


def wheelhouse(cache: Path, lock: Path, digest: str, python: str, arch: str) -> Path:
    """A tarball of the wheels `lock` needs and the lock to install them with (cached by digest)."""
    tarball = cache / f"{digest}-cp{python.replace('.', '')}-{arch}.tar"
    if tarball.exists():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    # Made in a folder of its own and renamed into place when whole: an interrupted build leaves
    # nothing a later deploy would take for finished, and two deploys at once do not share files.
    with tempfile.TemporaryDirectory(dir=cache, prefix=".making-") as made:
        folder = Path(made) / "wheels"
        folder.mkdir()
        text = lock.read_text()
        pins = entries(text)
        sdist_only = _download_wheels(folder, pins, python, arch)
        if sdist_only:
            text = _build_pure_wheels(folder, text, {name: pins[name] for name in sdist_only})
        (folder / SERVER_LOCK).write_text(text)
        with tarfile.open(Path(made) / tarball.name, "w") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=path.name)
        os.replace(Path(made) / tarball.name, tarball)
    return tarball


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
                          capture_output=True, text=True)


def _download_wheels(folder: Path, pins: dict[str, str], python: str, arch: str) -> list[str]:
    """Download every pin's wheel for the servers; the names of the pins that have none."""
    platforms = [f"--platform={p}_{arch}" for p in ("manylinux_2_28", "manylinux_2_17", "manylinux2014")]
    sdist_only: list[str] = []
    while True:
        request = folder / "wanted.lock"
        request.write_text("".join(entry for name, entry in pins.items() if name not in sdist_only))
        proc = _pip("download", "--no-deps", "--only-binary=:all:", *platforms, f"--python-version={python}",
                    "--implementation=cp", f"--abi=cp{python.replace('.', '')}", "--require-hashes",
                    "-r", str(request), "-d", str(folder))
        request.unlink()
        if proc.returncode == 0:
            return sdist_only
        missing = [normalize(m) for m in _NO_WHEEL.findall(proc.stderr)]
        missing = [name for name in missing if name in pins and name not in sdist_only]
        if not missing:
            raise CommandFailed(["pip", "download", "-r", "(the lock)"], proc.returncode, proc.stdout + proc.stderr,
                                hint="the controller needs the package index (or a wheel cache) to prepare the "
                                     "servers' wheels")
        sdist_only += missing


def _build_pure_wheels(folder: Path, text: str, pins: dict[str, str]) -> str:
    """Each pin's sdist (hash checked), built into a pure-Python wheel; the lock text with each built
    wheel's hash added to its entry. A package that would need compiling is refused by name."""
    sdists = folder / "sdists"
    request = folder / "sdists.lock"
    request.write_text("".join(pins.values()))
    proc = _pip("download", "--no-deps", "--no-binary=:all:", "--require-hashes", "-r", str(request), "-d", str(sdists))
    request.unlink()
    if proc.returncode != 0:
        raise CommandFailed(["pip", "download", "--no-binary=:all:", *pins], proc.returncode, proc.stderr,
                            hint=f"{', '.join(pins)} publish(es) no wheel for the servers, and the sdist could not be fetched")
    for sdist in sorted(sdists.iterdir()):
        built = folder / "built"
        proc = _pip("wheel", "--no-deps", "-w", str(built), str(sdist))
        if proc.returncode != 0:
            raise CommandFailed(["pip", "wheel", sdist.name], proc.returncode, proc.stderr,
                                hint=f"{sdist.name} has no wheel for the servers and does not build here")
        for wheel in sorted(built.iterdir()):
            name = normalize(wheel.name.split("-")[0])
            if not _PURE.search(wheel.name):
                raise DeployError(f"{name} publishes no wheel for the servers' Python and CPU, and it is not pure "
                                  f"Python ({wheel.name}): a wheel built on this machine may not run there",
                                  hint=f"pin a version of {name} that has a manylinux wheel, or build its wheel on a "
                                       f"server of the stage and publish it to your package index")
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            entry = pins.get(name)
            if entry is None:
                raise DeployError(f"building {sdist.name} gave {wheel.name}, which the lock does not name")
            text = text.replace(entry, entry.rstrip("\n") + f" \\\n    --hash=sha256:{digest}\n")
            wheel.rename(folder / wheel.name)
        shutil.rmtree(built)
    shutil.rmtree(sdists)
    return text
