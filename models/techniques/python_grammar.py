"""A grammar of the Python we generate, for grammar-constrained decoding (hybrid_grammar_neural).

The answer it describes is one fenced block, "```python\\n" + a module + "```": imports, functions
(async, decorated, annotated), classes and every statement of Python 3.11 except `match`, with the
expression syntax of the language (precedence, comprehensions, lambdas, slices, walrus, starred
items, calls with keywords, adjacent strings, f-strings as strings, numbers with underscores).
It is an EBNF (xgrammar's dialect, the llama.cpp GBNF format), generated here.

Indentation. Python's INDENT/DEDENT are context-sensitive: a block's lines must all start at the same
column, deeper than the line that opened it. A context-free grammar can say that for a bounded set of
columns, so the statement rules exist once per column (`stmt_C`, `block_C`, `suite_C`, ... for every C
up to MAX_COLUMN): a block opened at column C continues at one column D in C+1 .. C+MAX_STEP, every
statement of that block starts with exactly D spaces, and the block ends when a line starts at a column
its parent expects. The column is thus the matcher's own state: forking or rolling back a matcher
carries its indentation with it, which is what beam search needs. Tabs are not allowed.

Where the grammar is looser than Python (the parser checks the result anyway, `codegen.prompts.parses`):
- assignment targets are expressions (`f() = 1` is grammatical, as in Python's own grammar, which
  rejects it in a later pass);
- the contents of f-strings are not parsed (their braces are characters);
- identifiers are ASCII; keywords are not identifiers (the NAME rule excludes them);
- a keyword is followed by whitespace, or by a bracket after `if`, `elif`, `while`, `return`, `assert`
  and `not` (`if(x):`); `x in(y)` is not grammatical.
Lines inside brackets may break anywhere between items and operators, with comments.
"""

from __future__ import annotations

import keyword
from functools import lru_cache

# Whitespace is written inline as character classes, never as a rule of its own, and required whitespace
# as `[ ] [ ]*`, never `[ ]+` (which xgrammar compiles into a recursive rule of its own). At a state
# inside such a rule every token that starts with a space and goes on (` x`, ` 2`) leaves the rule, so
# the precomputed mask cannot decide it (31,650 of 49,152 tokens after `return `) and the matcher runs
# its parser for each one: 40-200 ms per mask after ` if`, ` return`, ` import`, against ~0.2 ms inline.
WS = {
    "O": "[ \\t]*",  # within a line
    "S": "[ \\t] [ \\t]*",
    "OB": "[ \\t\\n]*",  # inside brackets, where newlines are whitespace too
    "SB": "[ \\t\\n] [ \\t\\n]*",
}

MAX_COLUMN = 40  # the deepest column a statement may start at
MAX_STEP = 8  # how much deeper than its parent a block may be indented
OPEN = "```python\n"
CLOSE = "```"


def _fill(text: str, **values: str) -> str:
    """`text` with each `{key}` replaced (not str.format: the grammar has braces of its own)."""
    for key, value in {**WS, **values}.items():
        text = text.replace("{" + key + "}", value)
    return text


def _lit(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def _class(chars: set[str]) -> str:
    """A character class for a set of ASCII identifier characters, as ranges."""
    codes = sorted(ord(c) for c in chars)
    parts, i = [], 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        a, b = chr(codes[i]), chr(codes[j])
        parts.append(a if i == j else f"{a}-{b}")
        i = j + 1
    return "[" + "".join(parts) + "]"


ID_START = {chr(c) for c in range(ord("a"), ord("z") + 1)} | {chr(c) for c in range(ord("A"), ord("Z") + 1)} | {"_"}
ID_CHAR = ID_START | {str(d) for d in range(10)}


def _names() -> list[str]:
    """NAME: an ASCII identifier that is not a keyword, as a trie over the keywords."""
    words = set(keyword.kwlist)
    prefixes = {w[:i] for w in words for i in range(1, len(w) + 1)}
    rules = []

    def rule(p: str) -> str:
        return "name_" + p

    def alts(p: str, allowed: set[str]) -> list[str]:
        children = {q[-1] for q in prefixes if len(q) == len(p) + 1 and q.startswith(p)}
        out = [f'"{c}" {rule(p + c)}' for c in sorted(children)]
        others = allowed - children
        if others:
            out.append(f"{_class(others)} name_tail")
        return out

    rules.append("name ::= " + " | ".join(alts("", ID_START)))
    for p in sorted(prefixes):
        options = alts(p, ID_CHAR)
        if p not in words:
            options.append('""')
        rules.append(f"{rule(p)} ::= " + " | ".join(options))
    rules.append("name_tail ::= [a-zA-Z0-9_]*")
    return rules


# Expression rules, written once with {o} (optional whitespace), {s} (required whitespace) and {x}
# (the suffix of this flavour's rules): the line flavour ("") and the bracket flavour ("_b", inside
# (), [] and {}, where newlines and comments are whitespace too).
_EXPRESSIONS = r"""
test{x} ::= or_test{x} ({s} "if" {s} or_test{x} {s} "else" {s} test{x})? | lambdef{x}
test_nocond{x} ::= or_test{x} | lambdef{x}
namedexpr{x} ::= name {o} ":=" {o} test{x} | test{x}
lambdef{x} ::= "lambda" ({s} lparams{x})? {o} ":" {o} test{x}
lparams{x} ::= lparam{x} ({o} "," {o} lparam{x})* ({o} ",")?
lparam{x} ::= name ({o} "=" {o} test{x})? | "*" {o} name? | "**" {o} name | "/"
or_test{x} ::= not_test{x} ({s} ("or" | "and") {s} not_test{x})*
not_test{x} ::= "not" ({s} not_test{x} | comparison_p) | comparison{x}
comparison{x} ::= bor{x} (comp_tail{x})*
comp_tail{x} ::= {o} ("<" | ">" | "==" | ">=" | "<=" | "!=") {o} bor{x} | {s} ("in" | "not" {s} "in" | "is" | "is" {s} "not") {s} bor{x}
bor{x} ::= factor{x} ({o} binop {o} factor{x})*
factor{x} ::= ("+" | "-" | "~") {o} factor{x} | power{x}
power{x} ::= ("await" {s})? atom{x} trailer{x}*
star_expr{x} ::= "*" {o} bor{x}
test_or_star{x} ::= test{x} | star_expr{x}
testlist{x} ::= test{x} ({o} "," {o} test{x})* ({o} ",")?
testlist_star{x} ::= test_or_star{x} ({o} "," {o} test_or_star{x})* ({o} ",")?
targetlist{x} ::= target{x} ({o} "," {o} target{x})* ({o} ",")?
target{x} ::= star_expr{x} | bor{x}
yield_expr{x} ::= "yield" ({s} "from" {s} test{x} | {s} testlist_star{x})?
comp_for{x} ::= ("async" {s})? "for" {s} targetlist{x} {s} "in" {s} or_test{x} comp_iter{x}*
comp_iter{x} ::= {s} comp_for{x} | {s} "if" {s} test_nocond{x}
atom{x} ::= "(" {OB} (paren_body {OB})? ")" | "[" {OB} (list_body {OB})? "]" | "{" {OB} (brace_body {OB})? "}" | name | number | strings{x} | "..." | "None" | "True" | "False"
trailer{x} ::= {o} "(" {OB} (arglist {OB})? ")" | {o} "[" {OB} subscripts {OB} "]" | {o} "." {o} name
strings{x} ::= string ({o} string)*
"""

# A keyword may be followed by a bracket with no space (`if(x):`, `return[a]`, `not(x)`): the `_p`
# rules are the expression chain whose first atom is a bracketed one.
_BRACKETED = r"""
test_p ::= or_test_p ({S} "if" {S} or_test {S} "else" {S} test)?
or_test_p ::= comparison_p ({S} ("or" | "and") {S} not_test)*
comparison_p ::= bor_p (comp_tail)*
bor_p ::= power_p ({O} binop {O} factor)*
power_p ::= atom_p trailer*
atom_p ::= "(" {OB} (paren_body {OB})? ")" | "[" {OB} (list_body {OB})? "]" | "{" {OB} (brace_body {OB})? "}"
testlist_star_p ::= test_p ({O} "," {O} test_or_star)* ({O} ",")?
kw_test ::= {S} namedexpr | test_p
kw_testlist ::= {S} testlist_star | testlist_star_p
"""

_ATOMS = r"""
paren_body ::= yield_expr_b | namedexpr_b {SB} comp_for_b | items_b
list_body ::= namedexpr_b {SB} comp_for_b | items_b
items_b ::= item_b ({OB} "," {OB} item_b)* ({OB} ",")?
item_b ::= namedexpr_b | star_expr_b
brace_body ::= dict_item {SB} comp_for_b | dict_item ({OB} "," {OB} dict_item)* ({OB} ",")? | namedexpr_b {SB} comp_for_b | items_b
dict_item ::= test_b {OB} ":" {OB} test_b | "**" {OB} bor_b
arglist ::= argument ({OB} "," {OB} argument)* ({OB} ",")?
argument ::= test_b ({SB} comp_for_b)? | name {OB} "=" {OB} test_b | "*" {OB} test_b | "**" {OB} test_b
subscripts ::= subscript ({OB} "," {OB} subscript)* ({OB} ",")?
subscript ::= test_b | star_expr_b | test_b? {OB} ":" {OB} test_b? ({OB} ":" {OB} test_b?)?
string ::= string_prefix? (string_sq | string_dq | string_tsq | string_tdq)
string_prefix ::= [rRbBuUfF] | [rR] [bBfF] | [bBfF] [rR]
string_sq ::= "'" ([^'\\\n] | "\\" [^\x00])* "'"
string_dq ::= "\"" ([^"\\\n] | "\\" [^\x00])* "\""
string_tsq ::= "'''" ([^'\\] | "\\" [^\x00] | "'" [^'\\] | "'\\" [^\x00] | "''" [^'\\] | "''\\" [^\x00])* "'''"
string_tdq ::= "\"\"\"" ([^"\\] | "\\" [^\x00] | "\"" [^"\\] | "\"\\" [^\x00] | "\"\"" [^"\\] | "\"\"\\" [^\x00])* "\"\"\""
number ::= (dec_int | float) [jJ]? | "0" [xX] ("_"? [0-9a-fA-F])+ | "0" [oO] ("_"? [0-7])+ | "0" [bB] ("_"? [01])+
dec_int ::= [1-9] ("_"? [0-9])* | "0" ("_"? "0")*
digits ::= [0-9] ("_"? [0-9])*
float ::= digits "." digits? exponent? | "." digits exponent? | digits exponent
exponent ::= [eE] [+-]? digits
binop ::= "|" | "^" | "&" | "<<" | ">>" | "+" | "-" | "*" | "/" | "//" | "%" | "@" | "**"
comment ::= "#" [^\n]*
eol ::= {O} comment? "\n" blank*
blank ::= [ \t]* comment? "\n"
"""

_SIMPLE = r"""
simple_stmts ::= small ({O} ";" {O} small)* ({O} ";")? eol
small ::= expr_stmt | "return" kw_testlist? | "pass" | "break" | "continue" | "raise" ({S} test ({S} "from" {S} test)?)? | "global" {S} name ({O} "," {O} name)* | "nonlocal" {S} name ({O} "," {O} name)* | "del" {S} targetlist | "assert" kw_test ({O} "," {O} test)? | import_stmt
expr_stmt ::= testlist_star ({O} ":" {O} test ({O} "=" {O} (yield_expr | testlist_star))? | {O} augop {O} (yield_expr | testlist) | ({O} "=" {O} (yield_expr | testlist_star))*) | yield_expr
augop ::= "+=" | "-=" | "*=" | "@=" | "/=" | "%=" | "&=" | "|=" | "^=" | "<<=" | ">>=" | "**=" | "//="
import_stmt ::= "import" {S} dotted_as ({O} "," {O} dotted_as)* | "from" {S} (dots? dotted | dots) {S} "import" {S} import_names
dots ::= "."+
dotted ::= name ({O} "." {O} name)*
dotted_as ::= dotted ({S} "as" {S} name)?
import_names ::= "*" | import_as ({O} "," {O} import_as)* | "(" {OB} import_as ({OB} "," {OB} import_as)* ({OB} ",")? {OB} ")"
import_as ::= name ({S} "as" {S} name)?
with_items ::= with_item ({O} "," {O} with_item)* | "(" {OB} with_item_b ({OB} "," {OB} with_item_b)* ({OB} ",")? {OB} ")"
with_item ::= test ({S} "as" {S} target)?
with_item_b ::= test_b ({SB} "as" {SB} target_b)?
params ::= param ({OB} "," {OB} param)* ({OB} ",")?
param ::= name ({OB} ":" {OB} test_b)? ({OB} "=" {OB} test_b)? | "*" ({OB} name ({OB} ":" {OB} test_b)?)? | "**" {OB} name ({OB} ":" {OB} test_b)? | "/"
funchead ::= ("async" {S})? "def" {S} name {O} "(" {OB} (params {OB})? ")" ({O} "->" {O} test)? {O} ":"
classhead ::= "class" {S} name ({O} "(" {OB} (arglist {OB})? ")")? {O} ":"
"""

_COLUMN = r"""
block_{c} ::= (ind_{c} stmt_{c})+
ind_{c} ::= {indent}
stmt_{c} ::= simple_stmts | if_{c} | while_{c} | for_{c} | try_{c} | with_{c} | def_{c} | class_{c} | decorated_{c}
suite_{c} ::= {O} simple_stmts{deeper}
else_{c} ::= ind_{c} "else" {O} ":" suite_{c}
if_{c} ::= "if" kw_test {O} ":" suite_{c} (ind_{c} "elif" kw_test {O} ":" suite_{c})* else_{c}?
while_{c} ::= "while" kw_test {O} ":" suite_{c} else_{c}?
for_{c} ::= ("async" {S})? "for" {S} targetlist {S} "in" {S} testlist_star {O} ":" suite_{c} else_{c}?
try_{c} ::= "try" {O} ":" suite_{c} (except_{c}+ else_{c}? finally_{c}? | finally_{c})
except_{c} ::= ind_{c} "except" ("*"? {S} test ({S} "as" {S} name)?)? {O} ":" suite_{c}
finally_{c} ::= ind_{c} "finally" {O} ":" suite_{c}
with_{c} ::= ("async" {S})? "with" {S} with_items {O} ":" suite_{c}
def_{c} ::= funchead suite_{c}
class_{c} ::= classhead suite_{c}
decorated_{c} ::= ("@" {O} namedexpr eol ind_{c})+ (def_{c} | class_{c})
"""


@lru_cache(maxsize=1)
def ebnf() -> str:
    """The grammar's text (root rule `root`)."""
    parts = [f"root ::= {_lit(OPEN)} blank* block_0? {_lit(CLOSE)}"]
    for flavour, o, s in (("", WS["O"], WS["S"]), ("_b", WS["OB"], WS["SB"])):
        parts.append(_fill(_EXPRESSIONS, x=flavour, o=o, s=s).strip())
    parts += [_fill(_BRACKETED).strip(), _fill(_ATOMS).strip(), _fill(_SIMPLE).strip(), *_names()]
    for c in range(MAX_COLUMN + 1):
        deeper = [f"block_{d}" for d in range(c + 1, min(c + MAX_STEP, MAX_COLUMN) + 1)]
        blocks = f" | eol ({' | '.join(deeper)})" if deeper else ""  # at the last column: inline suites only
        parts.append(_fill(_COLUMN, c=str(c), indent=_lit(" " * c) if c else '""', deeper=blocks).strip())
    return "\n".join(parts) + "\n"


def fenced(code: str) -> str:
    """`code` as the grammar's answer: the fenced block, with the final newline the grammar needs."""
    return OPEN + (code if code.endswith("\n") or not code else code + "\n") + CLOSE
