"""Grammars and JSON Schemas compiled for one tokenizer (xgrammar), once per process.

The Python grammar takes tens of seconds to compile for a vocabulary, a JSON Schema milliseconds. The
compiler and the compiled grammars have their own lock, so a compile never holds the model's load or
generation lock: generation of other requests goes on while one request's grammar compiles.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xgrammar


class Grammars:
    def __init__(self, tokenizer, vocab_size: int) -> None:
        self._tokenizer, self._vocab_size = tokenizer, vocab_size
        self._lock = threading.Lock()
        self._compiler = None
        self._compiled: dict[tuple[str, str], xgrammar.CompiledGrammar] = {}

    def compiled(self, kind: str, text: str) -> xgrammar.CompiledGrammar:
        """A grammar ("ebnf") or a JSON Schema ("json") compiled for the tokenizer (cached)."""
        import xgrammar as xgr

        key = (kind, text)
        with self._lock:
            if key in self._compiled:
                return self._compiled[key]
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self._vocab_size)
                self._compiler = xgr.GrammarCompiler(info)
            compiler = self._compiler
            self._compiled[key] = (
                compiler.compile_grammar(text)
                if kind == "ebnf"
                else compiler.compile_json_schema(text, any_whitespace=False)
            )
            return self._compiled[key]
