"""A sentence-transformers model (Transformer, mean Pooling, Normalize) run by ONNX Runtime.

Why: one short query through torch takes about 18 ms on this machine's 2 cores, which alone is
most of /similar's 20 ms budget; ONNX Runtime's fused CPU kernels run the same graph in about 8 ms,
and batches about 15% faster. The vectors are the same (each export is refused unless its cosine to
torch's is at least 0.9999; measured: above 0.99999), so an index built by either serves the other.

The graph is exported here from the model's own local weights with torch's exporter, never
downloaded: `<models_path>/.cache/onnx/<name>-<hash>[-fused<N>].onnx`, where the hash covers the
model's config and weights and EXPORT_VERSION. A temporary file and a rename, so a crash or two
processes exporting at once leave no half file.

`EncoderOptions` are the levers make bench-kb measures one by one (README, the knowledge base's
measured figures): `fused` exports the encoder with eager attention, whose pattern onnxruntime's
transformer optimizer fuses (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu;
the default export's scaled-dot-product attention is not fused); `spinning` lets ONNX Runtime's
threads spin-wait between operators; `threads` sets its intra-op threads. None of them changes the
vectors beyond float rounding (tests/test_embedders.py: cosine >= 0.99999 to the default export).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("specmill.knowledge")

EXPORT_VERSION = "1"  # bump when the exported graph changes: old cache entries are then ignored
FUSED_VERSION = "1"  # the same, for the fused graph alone (the default export's cache entries stay valid)
OPSET = 17
PROBE = ["def add(a, b):\n    return a + b", "Return the number of vowels in a string."]
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class EncoderOptions:
    fused: bool = False
    spinning: bool = False
    threads: int | None = None  # None: one per CPU

    def session_options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or max(1, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        return options


# What the encoder ran with before make bench-kb measured the levers: the bench's baseline. The product keeps
# the levers that helped there (README, the knowledge base's measured figures): no spinning; the fused graph
# and one thread were no faster.
BASELINE_ENCODER = EncoderOptions(spinning=True)
ENCODER = EncoderOptions()


class UnsupportedModel(ValueError):
    """The directory is not a Transformer + mean Pooling + Normalize sentence-transformers model."""


def _pipeline(path: Path) -> int:
    """The model's max_seq_length, once its modules are checked to be what this class computes."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = json.loads(
            (path / next(m["path"] for m in modules if m["type"].endswith("Pooling")) / "config.json").read_text()
        )
        max_len = int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, StopIteration) as err:
        raise UnsupportedModel(f"{path}: not a sentence-transformers directory ({err})") from err
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    if kinds != ["Transformer", "Pooling", "Normalize"] or modes != ["pooling_mode_mean_tokens"]:
        raise UnsupportedModel(
            f"{path}: modules {kinds} with pooling {modes}; only mean pooling + Normalize is exported"
        )
    return max_len


def _digest(path: Path) -> str:
    h = hashlib.sha256(EXPORT_VERSION.encode())
    for name in ("config.json", "model.safetensors"):
        with open(path / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def export(path: Path, out: Path, *, fused: bool = False) -> None:
    """Export the Transformer with mean pooling and L2 normalisation folded into the graph; `fused`: with
    eager attention, then rewritten by onnxruntime's transformer optimizer into its fused operators."""
    import torch
    from transformers import AutoModel

    extra = {"attn_implementation": "eager"} if fused else {}
    model = AutoModel.from_pretrained(str(path), local_files_only=True, **extra).eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in INPUTS)
    axes = {name: {0: "batch", 1: "tokens"} for name in INPUTS} | {"embedding": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter(
            "ignore"
        )  # the TorchScript exporter announces its deprecation; it is what needs no onnxscript
        torch.onnx.export(
            Pooled(),
            example,
            str(out),
            input_names=list(INPUTS),
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    if fused:
        _fuse(out, model.config)


def _fuse(graph: Path, config) -> None:
    """onnxruntime's BERT fusions, in place (opt_level 0: the session applies its own optimizations on load)."""
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(
        str(graph),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        opt_level=0,
    )
    fused = model.get_fused_operator_statistics()
    log.info("fused %s: %s", graph.name, {k: v for k, v in fused.items() if v})
    model.save_model_to_file(str(graph))


class OnnxSentenceEmbedder:
    engine = "onnxruntime"

    def __init__(
        self, name: str, path: Path, *, cache_dir: Path, batch_size: int = 32, options: EncoderOptions = ENCODER
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.name, self.model, self.batch_size, self.options = name, str(path), batch_size, options
        max_len = _pipeline(path)
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tok.no_padding()  # the file pads every text to 128 tokens; batches pad to their longest here
        self._tok.enable_truncation(max_len)
        session_options = options.session_options()
        self.graph = self._graph(path, cache_dir)
        try:
            self._session = ort.InferenceSession(str(self.graph), session_options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - a damaged cache entry: made again from the weights, once
            log.warning("embedder %s: cached graph %s does not load (%s); exporting it again", name, self.graph, err)
            self.graph.unlink(missing_ok=True)
            self.graph = self._graph(path, cache_dir)
            self._session = ort.InferenceSession(str(self.graph), session_options, providers=["CPUExecutionProvider"])
        if self.graph.parent != cache_dir:  # not cached: the session holds the graph, the file can go
            shutil.rmtree(self.graph.parent, ignore_errors=True)
        self.dimension = int(self._run(PROBE[:1]).shape[1])
        self._lock = threading.Lock()

    def _graph(self, path: Path, cache_dir: Path) -> Path:
        variant = f"-fused{FUSED_VERSION}" if self.options.fused else ""
        graph = cache_dir / f"{self.name}-{_digest(path)}{variant}.onnx"
        if graph.exists():
            return graph
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{graph.name}.", dir=cache_dir)
        except OSError as err:  # a read-only models directory: export for this process only
            log.warning("embedder %s: cannot cache the ONNX graph under %s (%s)", self.name, cache_dir, err)
            graph = Path(tempfile.mkdtemp(prefix="specmill-onnx-")) / graph.name
            fd, tmp = tempfile.mkstemp(prefix=f".{graph.name}.", dir=graph.parent)
        os.close(fd)
        try:
            export(path, Path(tmp), fused=self.options.fused)
            _check(path, Path(tmp), self._tok)
            os.chmod(tmp, 0o644)
            os.replace(tmp, graph)
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("embedder %s: exported %s to ONNX at %s", self.name, path, graph)
        return graph

    def _run(self, texts: list[str]) -> np.ndarray:
        return _run(self._session, self._tok, texts)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # a batch pads to its longest text
        with self._lock:
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                out[rows] = self._run([texts[i] for i in rows])
        return out


def _run(session, tok, texts: list[str]) -> np.ndarray:
    encoded = tok.encode_batch(texts)
    width = max(len(e.ids) for e in encoded)
    ids = np.zeros((len(encoded), width), np.int64)
    mask = np.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    return session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]


def _check(path: Path, graph: Path, tok) -> None:
    """The exported graph must give torch's vectors: a wrong export would silently poison the index."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(path), device="cpu", local_files_only=True).encode(
        PROBE, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    got = _run(ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]), tok, PROBE)
    cosine = (got * reference).sum(1)
    if got.shape != reference.shape or float(cosine.min()) < 0.9999:
        raise RuntimeError(f"the ONNX export of {path} does not match torch (cosine {cosine.tolist()})")
