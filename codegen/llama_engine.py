"""A compact decoding engine for Llama-architecture models on the CPU (or CUDA).

transformers' `generate()` spends most of a small model's time outside the arithmetic: a dozen
modules per layer, a cache that grows by concatenation, logits processors and stopping criteria
run as objects. This engine takes the weights of a loaded transformers Llama and runs the same
computation with fewer, larger operations:

- q, k and v are one matrix product, gate and up another (7 products per layer become 4);
- the key/value cache is allocated once for the whole request and written in place; attention runs
  in float32 on the CPU whatever the weights (its bf16 kernel is slow there);
- rotary embeddings come from the model's own rotary module (so every rope scaling it supports
  applies), computed once per request;
- the decoding loop is one Python loop with one forward call per token, composed of the objects of
  codegen/decoding.py: logits processors (a grammar's masks), a chooser (greedy or sampling) and
  stopping criteria; beam search (codegen/beam_search.py) is its own loop over the same engine.

Weights (`weights`):
- `fp32` / `bf16`: as they are, in that dtype;
- `int8`: weight-only, one scale per output row (`torch._weight_int8pack_mm`), bf16 activations;
- `int4`: weight-only, asymmetric, one scale and zero per 32 inputs of a row
  (`torch.ops.aten._weight_int4pack_mm_for_cpu`), bf16 activations. For a model that came from a
  Q4_0/Q4_1 GGUF this is the file's own 4-bit weights again: each 32-weight block of the dequantized
  matrix holds at most 16 distinct values, and the block's minimum and maximum give back its
  scale and offset. The output head (tied to the embeddings, Q8_0 in such files) stays int8.

The quantized kernels are CPU kernels: on CUDA `int8`/`int4` run as bf16. A product whose shape a
kernel refuses falls back to int8, then to the activation dtype. The engine is checked against
transformers' own forward pass in the tests (tests/test_local_llama.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own idiom

from codegen import decoding
from codegen.decoding import DEAD_END, GREEDY, Chooser, Processor, Stopping
from codegen.speculation import DRAFT, PromptLookup, Stats

GROUP = 32  # int4 group size along the input dimension: a GGUF Q4 block
SUPPORTED_TYPES = {"llama"}


class Unsupported(Exception):
    """The model is not one this engine runs (the caller uses transformers' generate instead)."""


def supported(model) -> str | None:
    """None when the engine can run `model`, else why not."""
    cfg = model.config
    if getattr(cfg, "model_type", None) not in SUPPORTED_TYPES:
        return f"architecture {getattr(cfg, 'model_type', None)!r}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "bias terms"
    return None


class Linear:
    """y = x @ W.T in one of the weight formats of the module docstring."""

    def __init__(self, weight: torch.Tensor, kind: str, act: torch.dtype) -> None:
        w = weight.detach().to(torch.float32)
        self.out_features = w.shape[0]
        order = {"int4": ("int4", "int8"), "int8": ("int8",)}.get(kind, ())
        for self.kind in order:
            try:
                (self._int4 if self.kind == "int4" else self._int8)(w, act)
                return
            except (RuntimeError, ValueError):  # a shape the kernel refuses
                continue
        self.kind = "dense"
        self.w = w.to(act).contiguous()

    def _int8(self, w: torch.Tensor, act: torch.dtype) -> None:
        if w.shape[1] % 16:  # the kernel reads past the row (a crash, not an error) otherwise
            raise ValueError("input size is not a multiple of 16")
        scale = w.abs().amax(1).clamp(min=1e-12) / 127
        self.w = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        self.scale = scale.to(act)
        self._check(w, act)

    def _int4(self, w: torch.Tensor, act: torch.dtype) -> None:
        n, k = w.shape
        if k % GROUP:
            raise ValueError("input size is not a multiple of the group")
        blocks = w.reshape(n, k // GROUP, GROUP)
        low, high = blocks.amin(-1), blocks.amax(-1)
        scale = ((high - low) / 15).clamp(min=1e-12)
        q = ((blocks - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32).reshape(n, k)
        # the kernel computes (q - 8) * scale + zero
        self.scale_zero = torch.stack([scale.t(), (low + 8 * scale).t()], -1).contiguous().to(act)
        self.w = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 1)
        self._check(w, act)

    def _check(self, w: torch.Tensor, act: torch.dtype) -> None:
        """The quantized product of a fixed probe must be near the dense one (else: the next format)."""
        probe = torch.randn(2, w.shape[1], generator=torch.Generator().manual_seed(0))
        dense = probe @ w.t()
        got = self(probe.to(act)).float()
        if not bool(((got - dense).norm() <= 0.2 * dense.norm() + 1e-6)):
            raise ValueError(f"{self.kind} product is off for this shape")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "dense":
            return F.linear(x, self.w)
        flat = x.reshape(-1, x.shape[-1])
        if self.kind == "int4":
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.w, GROUP, self.scale_zero)
        else:
            y = torch._weight_int8pack_mm(flat, self.w, self.scale)
        return y.reshape(*x.shape[:-1], self.out_features)


@dataclass
class Layer:
    attn_norm: torch.Tensor
    qkv: Linear
    out: Linear
    mlp_norm: torch.Tensor
    gate_up: Linear
    down: Linear


class LlamaEngine:
    """The weights of a transformers Llama, rearranged for decoding; see the module docstring."""

    def __init__(self, model, weights: str = "fp32") -> None:
        why = supported(model)
        if why:
            raise Unsupported(why)
        if weights not in ("fp32", "bf16", "int8", "int4"):
            raise ValueError(f"weights must be fp32, bf16, int8 or int4, not {weights!r}")
        cfg = model.config
        self.device = next(model.parameters()).device
        if self.device.type != "cpu" and weights in ("int8", "int4"):
            weights = "bf16"
        self.weights = weights
        self.act = torch.float32 if weights == "fp32" else torch.bfloat16
        # Attention (rotary, the cache, scaled_dot_product_attention) runs in float32 on the CPU: its
        # bf16 kernel is about 15x slower there for one query against a few hundred keys (0.46 ms against
        # 0.03 ms per layer, measured 2026-12-01), which made it a third of a bf16 or int4 token's time.
        self.attn = torch.float32 if self.device.type == "cpu" else self.act
        kind = weights if weights in ("int8", "int4") else "dense"
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.vocab = cfg.vocab_size
        self.context = getattr(cfg, "max_position_embeddings", None)
        self.rotary = model.model.rotary_emb
        inner = model.model
        self.embed = inner.embed_tokens.weight.detach().to(self.act)
        self.norm = inner.norm.weight.detach().to(self.act)
        self.layers = []
        for block in inner.layers:
            a, m = block.self_attn, block.mlp
            self.layers.append(
                Layer(
                    attn_norm=block.input_layernorm.weight.detach().to(self.act),
                    qkv=Linear(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), kind, self.act),
                    out=Linear(a.o_proj.weight, kind, self.act),
                    mlp_norm=block.post_attention_layernorm.weight.detach().to(self.act),
                    gate_up=Linear(torch.cat([m.gate_proj.weight, m.up_proj.weight]), kind, self.act),
                    down=Linear(m.down_proj.weight, kind, self.act),
                )
            )
        # the head (often the embeddings themselves): int8 at most, it is the most sensitive product
        self.head = Linear(model.lm_head.weight, "int8" if kind != "dense" else "dense", self.act)
        self.intermediate = cfg.intermediate_size
        self.kinds = sorted({k for layer in self.layers for k in (layer.qkv.kind, layer.down.kind)})

    def bytes_per_token(self) -> int:
        """Weight bytes read per decoded token (what bounds the speed of a small model)."""
        total = 0
        for linear in [self.head] + [
            x for layer in self.layers for x in (layer.qkv, layer.out, layer.gate_up, layer.down)
        ]:
            total += linear.w.numel() * linear.w.element_size()
        return total

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(self.act) * weight

    def forward(self, ids: torch.Tensor, start: int, cache: "Cache") -> torch.Tensor:
        """Logits (float32) of the last position, after feeding `ids` (1 x T) from position `start`.

        Either the whole prompt (start 0) or one token at a time after it."""
        return self.forward_rows(ids, start, cache)[0]

    def forward_rows(self, ids: torch.Tensor, start: int, cache: "Cache") -> torch.Tensor:
        """Logits (B x vocab, float32) of the last position of each of the cache's first B rows,
        after feeding `ids` (B x T) from position `start`: B sequences in one pass, each row of the
        cache its own sequence. Either a prompt (start 0, T tokens) or one token per row after it."""
        b, t = ids.shape
        if t > 1 and start:
            raise ValueError("several tokens are fed at position 0 only")
        if b > cache.rows:
            raise ValueError(f"{b} rows fed to a cache of {cache.rows}")
        h = F.embedding(ids, self.embed)
        cos, sin = cache.cos[start : start + t], cache.sin[start : start + t]
        nq, nk, d = self.heads, self.kv_heads, self.head_dim
        end = start + t
        for i, layer in enumerate(self.layers):
            x = self._rms(h, layer.attn_norm)
            qkv = layer.qkv(x).view(b, t, nq + 2 * nk, d).transpose(1, 2)
            q, k, v = qkv.to(self.attn).split([nq, nk, nk], dim=1)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            cache.k[i][:b, :, start:end] = k
            cache.v[i][:b, :, start:end] = v
            y = F.scaled_dot_product_attention(
                q, cache.k[i][:b, :, :end], cache.v[i][:b, :, :end], is_causal=t > 1, enable_gqa=nq != nk
            )
            h = h + layer.out(y.transpose(1, 2).reshape(b, t, nq * d).to(self.act))
            x = self._rms(h, layer.mlp_norm)
            gate, up = layer.gate_up(x).split(self.intermediate, dim=-1)
            h = h + layer.down(F.silu(gate) * up)
        h = self._rms(h[:, -1:], self.norm)
        return self.head(h)[:, -1].float()

    def forward_each(self, ids: list[int], start: int, cache: "Cache") -> torch.Tensor:
        """Logits (T x vocab, float32) of every position, after feeding `ids` (T tokens) from position
        `start` > 0 into a cache that holds positions 0..start-1: the verification pass of speculation.

        Each position's numbers are the ones `forward` computes feeding its token alone: the products
        take the T rows at once (the weights are read once), and each row attends with its own call,
        shaped as the one-token step's, over the keys up to its own position. Whether the products give
        each row the same bits as one row alone depends on the machine's kernels: `speculation` checks."""
        t = len(ids)
        h = F.embedding(torch.tensor([ids], device=self.device), self.embed)
        cos, sin = cache.cos[start : start + t], cache.sin[start : start + t]
        nq, nk, d = self.heads, self.kv_heads, self.head_dim
        end = start + t
        for i, layer in enumerate(self.layers):
            x = self._rms(h, layer.attn_norm)
            qkv = layer.qkv(x).view(1, t, nq + 2 * nk, d).transpose(1, 2)
            q, k, v = qkv.to(self.attn).split([nq, nk, nk], dim=1)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            cache.k[i][:1, :, start:end] = k
            cache.v[i][:1, :, start:end] = v
            y = torch.cat(
                [
                    F.scaled_dot_product_attention(
                        q[:, :, j : j + 1],
                        cache.k[i][:1, :, : start + j + 1],
                        cache.v[i][:1, :, : start + j + 1],
                        enable_gqa=nq != nk,
                    )
                    for j in range(t)
                ],
                dim=2,
            )
            h = h + layer.out(y.transpose(1, 2).reshape(1, t, nq * d).to(self.act))
            x = self._rms(h, layer.mlp_norm)
            gate, up = layer.gate_up(x).split(self.intermediate, dim=-1)
            h = h + layer.down(F.silu(gate) * up)
        return self.head(self._rms(h, self.norm))[0].float()

    @torch.inference_mode()
    def speculation(self, probe_len: int = 4, draft: int = DRAFT) -> str | None:
        """None when speculation gives greedy decoding's exact tokens on this machine, else why not.

        A verification pass must give each position the bits the one-token step gives it. That holds
        when the matrix products give a row the same result whether it comes alone or with others, which
        depends on the kernels (the int4 and int8 ones, and bf16's, keep rows apart; float32's GEMM and
        GEMV round differently). This feeds a random sequence both ways and compares every logit."""
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, self.vocab, (probe_len + draft + 1,), generator=gen).tolist()
        one = self.new_cache(len(ids))
        self.forward(torch.tensor([ids[:probe_len]], device=self.device), 0, one)
        stepped = [
            self.forward(torch.tensor([[ids[p]]], device=self.device), p, one) for p in range(probe_len, len(ids))
        ]
        many = self.new_cache(len(ids))
        self.forward(torch.tensor([ids[:probe_len]], device=self.device), 0, many)
        together = self.forward_each(ids[probe_len:], probe_len, many)
        for p, (a, b) in enumerate(zip(stepped, together, strict=True)):
            if not torch.equal(a, b):
                diff = float((a - b).abs().max())
                return (
                    f"the {self.weights} kernels round a row differently when it comes with others on this "
                    f"machine (a logit differs by {diff:.1e} at draft position {p}): greedy tokens could differ"
                )
        return None

    @torch.inference_mode()
    def teacher_forced(self, ids: list[int], prompt_len: int, *, full: bool = False) -> Forced:
        """One pass over a prompt and the code that followed it (`ids`, the code from `prompt_len` on),
        with the attention weights made explicit (scaled_dot_product_attention does not return them).

        For each code token: its log-probability, and the attention of the position that predicted it
        (the one before it) over the prompt's tokens, per layer and head. `full` also keeps each layer's
        whole attention averaged over heads (T x T), which attention rollout multiplies through."""
        if not 0 < prompt_len < len(ids):
            raise ValueError("the ids must hold a prompt and at least one token after it")
        t = len(ids)
        x_ids = torch.tensor([ids], device=self.device)
        h = F.embedding(x_ids, self.embed)
        cache = self.new_cache(t)
        cos, sin = cache.cos[:t], cache.sin[:t]
        nq, nk, d = self.heads, self.kv_heads, self.head_dim
        rows = slice(prompt_len - 1, t - 1)  # the positions whose outputs predict the code's tokens
        mask = torch.full((t, t), float("-inf"), device=self.device).triu(1)
        to_prompt, layers_mean = [], []
        for layer in self.layers:
            x = self._rms(h, layer.attn_norm)
            qkv = layer.qkv(x).view(1, t, nq + 2 * nk, d).transpose(1, 2)
            q, k, v = qkv.to(torch.float32).split([nq, nk, nk], dim=1)
            q, k = _rope(q, cos.float(), sin.float()), _rope(k, cos.float(), sin.float())
            if nq != nk:
                k, v = k.repeat_interleave(nq // nk, dim=1), v.repeat_interleave(nq // nk, dim=1)
            weights = torch.softmax(q[0] @ k[0].transpose(-1, -2) / d**0.5 + mask, dim=-1)  # heads x T x T
            to_prompt.append(weights[:, rows, :prompt_len])
            if full:
                layers_mean.append(weights.mean(0))
            y = (weights @ v[0]).transpose(0, 1).reshape(1, t, nq * d)
            h = h + layer.out(y.to(self.act))
            x = self._rms(h, layer.mlp_norm)
            gate, up = layer.gate_up(x).split(self.intermediate, dim=-1)
            h = h + layer.down(F.silu(gate) * up)
        logits = self.head(self._rms(h[:, rows], self.norm))[0].float()
        targets = torch.tensor(ids[prompt_len:], device=self.device)
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
        return Forced(
            logprobs=logprobs.cpu(),
            to_prompt=torch.stack(to_prompt).cpu(),
            layers_mean=torch.stack(layers_mean).cpu() if full else None,
        )

    @torch.inference_mode()
    def logprobs_after(self, ids: list[int], start: int, cache: "Cache", first_target: int) -> torch.Tensor:
        """The log-probabilities of ids[first_target:], each under the positions before it, feeding
        ids[start:] at positions start.. into a cache that already holds positions 0..start-1 (any
        start, so a prefix computed once serves several continuations). The cache must hold len(ids)."""
        if not 0 < first_target < len(ids) or not 0 <= start < first_target:
            raise ValueError("the targets must follow the fed prefix and lie within the ids")
        t, end = len(ids) - start, len(ids)
        h = F.embedding(torch.tensor([ids[start:]], device=self.device), self.embed)
        cos, sin = cache.cos[start:end], cache.sin[start:end]
        nq, nk, d = self.heads, self.kv_heads, self.head_dim
        allowed = torch.arange(end, device=self.device)[None] <= torch.arange(start, end, device=self.device)[:, None]
        for i, layer in enumerate(self.layers):
            x = self._rms(h, layer.attn_norm)
            qkv = layer.qkv(x).view(1, t, nq + 2 * nk, d).transpose(1, 2)
            q, k, v = qkv.to(self.attn).split([nq, nk, nk], dim=1)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            cache.k[i][:1, :, start:end] = k
            cache.v[i][:1, :, start:end] = v
            y = F.scaled_dot_product_attention(
                q, cache.k[i][:1, :, :end], cache.v[i][:1, :, :end], attn_mask=allowed, enable_gqa=nq != nk
            )
            h = h + layer.out(y.transpose(1, 2).reshape(1, t, nq * d).to(self.act))
            x = self._rms(h, layer.mlp_norm)
            gate, up = layer.gate_up(x).split(self.intermediate, dim=-1)
            h = h + layer.down(F.silu(gate) * up)
        rows = slice(first_target - 1 - start, t - 1)
        logits = self.head(self._rms(h[:, rows], self.norm))[0].float()
        targets = torch.tensor(ids[first_target:], device=self.device)
        return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0].cpu()

    def new_cache(self, length: int, rows: int = 1) -> "Cache":
        return Cache(self, length, rows)

    @torch.inference_mode()
    def generate(
        self,
        prompt: list[int],
        stopping: Stopping,
        *,
        chooser: Chooser = GREEDY,
        processors: Sequence[Processor] = (),
        logprobs: list[float] | None = None,
        lookup: PromptLookup | None = None,
        stats: Stats | None = None,
    ) -> list[int]:
        """New token ids after `prompt`: the processors change the logits, the chooser picks the token,
        and `stopping` ends the sequence (an end token is kept) and says why in its `reason` (DEAD_END
        when the processors left no token at all). `logprobs`, when given, gets each new token's
        log-probability (after the processors, before any temperature).

        One forward pass per token, or, with `lookup` (greedy only: codegen/speculation.py), one pass per
        draft: the draft's tokens are fed with the last one chosen, and each position's logits are
        processed and chosen from in turn, exactly as one pass per token would, while the choice equals
        the draft's next token; where they part, the choice stands and the rest of the draft goes.
        `stats` counts the passes and the tokens drafted and accepted."""
        if lookup is not None and chooser is not GREEDY:
            raise ValueError("speculation keeps greedy decoding's tokens: it does not sample")
        if stopping.max_new <= 0:
            stopping.reason = "length"
            return []
        room = (lookup.draft if lookup is not None else 0) + 1
        cache = self.new_cache(len(prompt) + stopping.max_new + room)
        rows = self.forward(torch.tensor([prompt], device=self.device), 0, cache)[None]
        if lookup is not None:
            lookup.extend(list(prompt))
        new: list[int] = []
        draft: list[int] = []
        while True:
            for j in range(rows.shape[0]):
                logits = decoding.apply(processors, rows[j : j + 1])[0]
                if decoding.dead(logits):
                    stopping.dead_end()
                    return new
                token = chooser(logits)
                if logprobs is not None:
                    logprobs.append(_logprob(logits, token))
                decoding.advance(processors, [token])
                new.append(token)
                if lookup is not None:
                    lookup.extend([token])
                taken = j < len(draft) and token == draft[j]
                if taken and stats is not None:
                    stats.accepted += 1
                if stopping.done(new):
                    return new
                if not taken:
                    break
            position = len(prompt) + len(new) - 1  # of the token just chosen, not yet fed
            draft = lookup.propose()[: max(0, stopping.max_new - len(new) - 1)] if lookup is not None else []
            if not draft:
                rows = self.forward(torch.tensor([[token]], device=self.device), position, cache)[None]
                continue
            rows = self.forward_each([token, *draft], position, cache)
            if stats is not None:
                stats.passes += 1
                stats.drafted += len(draft)

    @torch.inference_mode()
    def generate_rows(
        self,
        prompt: list[int],
        stopping: Stopping,
        choosers: Sequence[Chooser],
        processors: Sequence[Processor] = (),
    ) -> Rows:
        """len(choosers) continuations of `prompt` decoded together, one forward pass per step: the
        prompt is fed once and shared, each row picks its token with its own chooser (greedy, or
        sampling with its own generator) after the processors (one state per row) changed its logits,
        and a row that ends (by `stopping`'s rules, asked per row, or a dead end) leaves the batch: the
        rows still running move to the front of the cache and of the processors' states, and only they
        are fed."""
        n = len(choosers)
        outs: list[list[int]] = [[] for _ in range(n)]
        reasons = ["length"] * n
        sums = [0.0] * n
        if stopping.max_new <= 0 or n == 0:
            return Rows(outs, reasons, sums)
        cache = self.new_cache(len(prompt) + stopping.max_new, rows=n)
        logits = self.forward_rows(torch.tensor([prompt], device=self.device), 0, cache).expand(n, -1)
        if processors:
            logits = logits.clone()  # the processors change rows in place
        cache.share_prompt(len(prompt))
        active = list(range(n))  # the row of the cache at position i decodes outs[active[i]]
        step = 0
        while True:
            logits = decoding.apply(processors, logits)
            still, tokens = [], []
            for i, r in enumerate(active):
                if decoding.dead(logits[i]):
                    reasons[r] = DEAD_END
                    continue
                token = choosers[r](logits[i])
                sums[r] += _logprob(logits[i], token)
                outs[r].append(token)
                why = stopping.why(outs[r])
                if why is None:
                    still.append(i)
                    tokens.append(token)
                else:
                    reasons[r] = why
            if not still:
                return Rows(outs, reasons, sums)
            cache.reorder(still, len(prompt) + step)  # the running rows to the front
            decoding.reorder(processors, still)
            decoding.advance(processors, tokens)
            active = [active[i] for i in still]
            feed = torch.tensor([[t] for t in tokens], device=self.device)
            logits = self.forward_rows(feed, len(prompt) + step, cache)
            step += 1


class Forced(NamedTuple):
    """What `teacher_forced` computed, for the G code tokens after a prompt of P tokens (T in all)."""

    logprobs: torch.Tensor  # G: each code token's log-probability
    to_prompt: torch.Tensor  # layers x heads x G x P: the attention of the position predicting each token
    layers_mean: torch.Tensor | None  # layers x T x T: each layer's attention averaged over heads (`full`)


class Rows(NamedTuple):
    """What `generate_rows` decoded: each row's new tokens, why it ended (as `Stopping.reason`), and
    the sum of its tokens' log-probabilities (after the processors, before any temperature)."""

    tokens: list[list[int]]
    reasons: list[str]
    logprobs: list[float]


def _logprob(logits: torch.Tensor, token: int) -> float:
    """The log-probability of `token` under one row's logits (a candidate's own confidence)."""
    return float(torch.log_softmax(logits.float(), dim=-1)[token])


class Cache:
    """Keys and values of every layer for `rows` sequences, allocated once, plus the rotary tables
    for its length. Several rows decode together (beams, or n candidates): the prompt is fed once,
    to row 0, and `share_prompt` gives every row its keys and values; `reorder` moves rows in place
    when beams are reordered, copying only the rows that change, and only up to the current length."""

    def __init__(self, engine: LlamaEngine, length: int, rows: int = 1) -> None:
        self.rows = rows
        shape = (rows, engine.kv_heads, length, engine.head_dim)
        self.k = [torch.empty(shape, dtype=engine.attn, device=engine.device) for _ in engine.layers]
        self.v = [torch.empty(shape, dtype=engine.attn, device=engine.device) for _ in engine.layers]
        positions = torch.arange(length, device=engine.device)[None]
        probe = torch.empty(1, dtype=torch.float32, device=engine.device)
        cos, sin = engine.rotary(probe, positions)
        self.cos, self.sin = cos[0].to(engine.attn), sin[0].to(engine.attn)  # L x D, broadcast over heads

    def copy_prefix(self, other: "Cache", length: int) -> None:
        """This cache's first row gets `other`'s first row over positions 0..length-1."""
        for mine, theirs in zip(self.k + self.v, other.k + other.v, strict=True):
            mine[:1, :, :length] = theirs[:1, :, :length]

    def share_prompt(self, length: int) -> None:
        """Every row gets row 0's first `length` positions (the prompt, fed once)."""
        for k, v in zip(self.k, self.v, strict=True):
            k[1:, :, :length] = k[:1, :, :length]
            v[1:, :, :length] = v[:1, :, :length]

    def reorder(self, sources: list[int], length: int) -> None:
        """Row r becomes what row sources[r] was, over the first `length` positions. Only the rows
        whose source differs are copied (through a gather of just those rows)."""
        if len(sources) > self.rows:
            raise ValueError(f"{len(sources)} rows reordered in a cache of {self.rows}")
        moved = [r for r, src in enumerate(sources) if src != r]
        if not moved:
            return
        dst = torch.tensor(moved, device=self.k[0].device)
        src = torch.tensor([sources[r] for r in moved], device=self.k[0].device)
        for k, v in zip(self.k, self.v, strict=True):
            k[dst, :, :length] = k[src, :, :length]  # the right side gathers first: cycles are safe
            v[dst, :, :length] = v[src, :, :length]


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
