"""hybrid_grammar_neural: decoding constrained by a grammar of Python (models/techniques/python_grammar.py),
or, where the backend cannot take a grammar, the answer parsed and asked for again."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from models.common import Strict
from models.techniques import python_grammar
from models.techniques.base import Decoding, Grammar, Mode, Technique


class GrammarSettings(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(
        default=2,
        ge=0,
        le=4,
        description="backends that cannot take the grammar: answers asked for again, each told the parse "
        "error, when the code does not parse",
    )


class HybridGrammarNeural(Technique):
    name = "hybrid_grammar_neural"
    description = (
        "Decoding constrained by a grammar of Python (models/techniques/python_grammar.py): at each step "
        "the grammar's matcher (xgrammar) masks every token that would make the answer ungrammatical, "
        "so the model writes one fenced code block of imports, functions, classes and statements. "
        "Python's indentation is handled inside the grammar: one copy of the statement rules per "
        "indentation column. On local_llama the mask is applied in specmill's engine (one matcher per "
        "beam when combined with syntax_aware_beam_search); deepseek_8b passes the same grammar to "
        "vLLM's structured outputs; openai_api and anthropic_api cannot take a grammar, so their "
        "answer is checked with Python's parser and asked again with the error, up to `retries` times. "
        "An answer the token budget stops is cut back to its last line that parses."
    )
    modes = (
        Mode(requires="logits", how="grammar masks in specmill's engine"),
        Mode(requires="grammar", how="the grammar passed to the backend's structured outputs"),
        Mode(requires="chat", how="the answer parsed, and asked again with the error up to `retries`"),
    )
    steps = ("constrained decoding, or check and ask again",)
    languages = ("python",)
    options = GrammarSettings
    targets_syntax = True

    def decoding(self, settings: GrammarSettings, mode: Mode) -> tuple[Decoding, ...]:
        return () if mode.requires == "chat" else (Grammar(python_grammar.ebnf()),)

    def answer_retries(self, settings: GrammarSettings, mode: Mode) -> int:
        return settings.retries if mode.requires == "chat" else 0


TECHNIQUE = HybridGrammarNeural()
