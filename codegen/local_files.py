"""The files local_llama loads: where LOCAL_MODEL's weights are (a pulled model, a GGUF file, a Hugging
Face directory), and a GGUF's conversion into a Hugging Face directory, cached.

A GGUF is dequantized by transformers on first load (about 17 s for SmolLM2-135M here). The dequantized
weights are then saved as safetensors, with the tokenizer and config, under
`<models_path>/.cache/<stem>-<hash of the file's size and mtime>/`, and later loads read that directory
instead (a second or two). Nothing is ever fetched from a hub, and a model that is not there is reported
unavailable, never replaced by another.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from codegen.base import ModelUnavailable
from codegen.pull import REGISTRY, pulled_file

# Nothing here may reach a hub: fail loudly instead of downloading.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger("codegen.local_llama")

CACHE_DIR = ".cache"
CACHE_VERSION = "1"  # bump when the cached layout changes: old entries are then ignored


@dataclass(frozen=True)
class Source:
    """Where the weights are: a GGUF file or a Hugging Face directory."""

    format: str  # "gguf" | "hf"
    path: Path

    def cache_dir(self, models_path: Path) -> Path | None:
        """The converted copy of a GGUF (None for an HF directory: it is loaded as it is)."""
        if self.format != "gguf":
            return None
        st = self.path.stat()
        key = hashlib.sha256(f"{CACHE_VERSION}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
        return Path(models_path) / CACHE_DIR / f"{self.path.stem.lower()}-{key}"


def resolve(local_model: str, models_path: Path) -> Source:
    """LOCAL_MODEL -> the files to load; ModelUnavailable with the reason when they are not there."""
    models_path = Path(models_path)
    if local_model in REGISTRY:
        found = pulled_file(models_path, local_model)
        if found is None:
            raise ModelUnavailable(
                f"model not pulled: run `specmill models pull {local_model}` (looked in {models_path / local_model})"
            )
        return Source("gguf", found)
    named = models_path / local_model
    path = named if not Path(local_model).is_absolute() and named.exists() else Path(local_model).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelUnavailable(f"{path} is neither a .gguf file nor a Hugging Face model directory")
        return Source("gguf", path)
    if path.is_dir():
        if (path / "config.json").exists():
            return Source("hf", path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Source("gguf", ggufs[0])
        raise ModelUnavailable(f"{path} has no config.json and {'several' if ggufs else 'no'} .gguf files")
    known = f"; pullable: {', '.join(sorted(REGISTRY))}" if REGISTRY else ""
    raise ModelUnavailable(
        f"model files not found: {local_model!r} is not a pulled model, a .gguf file or a Hugging Face directory{known}"
    )


def pick_device(local_device: str) -> str:
    import torch

    if local_device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if local_device == "cuda":
        raise ModelUnavailable("LOCAL_DEVICE=cuda but torch sees no CUDA device")
    return "cpu"


def converted(source: Source, models_path: Path) -> tuple[Path, str, bool]:
    """The GGUF as a safetensors directory: (directory, how, whether it is a temporary one).

    The cached copy when there is one; else converted now, into the cache when the models
    directory is writable (a temporary directory and a rename: a crash leaves no half cache)."""
    cache = source.cache_dir(models_path)
    assert cache is not None  # a GGUF has one
    if (cache / "config.json").exists():
        return cache, "gguf-cache", False
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        _sweep_abandoned(cache)
        work = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    except OSError as err:  # a read-only models directory: convert into a temporary one, every time
        log.warning("local_llama: cannot cache the converted GGUF under %s (%s)", cache.parent, err)
        work, cache = Path(tempfile.mkdtemp(prefix="specmill-gguf-")), None
    try:
        convert_gguf(source.path, work)
        if cache is None:
            return work, "gguf-dequantized-uncached", True
        _readable(work)
        try:
            os.replace(work, cache)
        except OSError:  # another process converted it meanwhile
            if not (cache / "config.json").exists():
                raise
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return cache, "gguf-dequantized", False


def load_hf(directory: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype, local_files_only=True)
    return model, tokenizer


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF into a Hugging Face directory (safetensors + config + tokenizer).

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the weights move into a
    fresh model built from the same config without its quantization entry."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # pyright: ignore[reportAttributeAccessIssue] - set per model, undeclared
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    del loaded
    fresh.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _sweep_abandoned(cache: Path, older_than_s: float = 3600) -> None:
    """Remove the work directories of conversions that crashed (a live one is minutes old at most)."""
    for stale in cache.parent.glob(f".{cache.name}.*"):
        try:
            if time.time() - stale.stat().st_mtime > older_than_s:
                shutil.rmtree(stale, ignore_errors=True)
        except FileNotFoundError:
            pass


def _readable(directory: Path) -> None:
    """mkdtemp makes 0700 and some writers 0600: other users of the models directory read the cache too."""
    directory.chmod(0o755)
    for f in directory.iterdir():
        if f.is_file():
            f.chmod(0o644)
