"""What the judge and the child of a sandboxed test run share (see sandbox/judge.py): the framing of
their records, the tagged encoding of plain values, and which asserts are compared where.

Inside the sandbox this file is /sandbox/wire.py, imported by the judge and by the child under
`python -I -S` (the standard library only).

Records: a 4-byte big-endian length, then that many bytes of a JSON object with a "t" (its kind).

Values: [tag, payload], for exactly these types (a subclass is none of them): None ["n"], bool
["b", true], int ["i", hex], float ["f", float.hex()], complex ["c", re, im], str ["s", text],
bytes ["y", hex], list ["l", [...]], tuple ["t", [...]], dict ["d", [[k, v], ...]], set ["e", [...]],
frozenset ["z", [...]]; at most MAX_DEPTH deep and MAX_ITEMS values in all. `decode` builds them back
with their own constructors (never eval, never pickle) and refuses anything else.
"""

import ast
import json
import os

MAX_RECORD = 4 * 1024 * 1024  # bytes of one record from the child
MAX_WORK = 256 * 1024 * 1024  # bytes of the work the judge sends (the solution and the tests)
MAX_DEPTH = 50
MAX_ITEMS = 20_000  # values in one encoded value (a set of colliding hashes costs the judge quadratic time)
SINGLETONS = (None, True, False, ...)  # `is` against these is decided by the value alone
OPS = {
    ast.Eq: ("==", lambda a, b: a == b),
    ast.NotEq: ("!=", lambda a, b: a != b),
    ast.Lt: ("<", lambda a, b: a < b),
    ast.LtE: ("<=", lambda a, b: a <= b),
    ast.Gt: (">", lambda a, b: a > b),
    ast.GtE: (">=", lambda a, b: a >= b),
    ast.In: ("in", lambda a, b: a in b),
    ast.NotIn: ("not in", lambda a, b: a not in b),
    ast.Is: ("is", lambda a, b: a is b),
    ast.IsNot: ("is not", lambda a, b: a is not b),
}


class ProtocolError(Exception):
    """The other end sent something the protocol does not allow."""


# --- which asserts -----------------------------------------------------------------------------


def comparison(stmt):
    """A top-level `assert LEFT OP RIGHT[, MSG]` with one operator of OPS."""
    test = stmt.test if isinstance(stmt, ast.Assert) else None
    return isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in OPS


_LITERAL_NODES = (ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.UnaryOp, ast.BinOp, ast.USub, ast.UAdd)
_LITERAL_NODES += (ast.Add, ast.Sub, ast.Load)


def _literal(node):
    """Is `node` a literal whose value does not depend on the namespace (no name, no call: `set()` is
    a call of whatever `set` names there)?"""
    if not all(isinstance(n, _LITERAL_NODES) for n in ast.walk(node)):
        return False
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def withheld_side(stmt):
    """For a comparison assert whose one side is a literal the judge can hold back: "right" or "left"
    (the other side is evaluated by the child and sent as a value); None when the child compares.
    `is`/`is not` qualify only against None, True, False and Ellipsis."""
    if not comparison(stmt):
        return None
    op, left, right = type(stmt.test.ops[0]), stmt.test.left, stmt.test.comparators[0]
    for side, node in (("right", right), ("left", left)):
        if not _literal(node):
            continue
        if op in (ast.Is, ast.IsNot) and not (
            isinstance(node, ast.Constant) and any(node.value is s for s in SINGLETONS)
        ):
            return None
        return side
    return None


# --- records -----------------------------------------------------------------------------------


def send(fd, record, limit=MAX_RECORD):
    data = json.dumps(record, separators=(",", ":")).encode("utf-8")
    if len(data) > limit:
        raise ValueError(f"a record of {len(data)} bytes")
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data) :]


def _read_exactly(fd, n):
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd, limit=MAX_RECORD):
    """The next record from a blocking fd; None at the end of the stream (between records)."""
    head = _read_exactly(fd, 4)
    if not head:
        return None
    return parse(head, lambda n: _read_exactly(fd, n), limit)


def parse(head, read, limit=MAX_RECORD):
    """One record from its 4-byte header and `read(n)`; ProtocolError if it is none."""
    if len(head) < 4:
        raise ProtocolError("a record cut short")
    size = int.from_bytes(head, "big")
    if size > limit:
        raise ProtocolError(f"a record header announcing {size} bytes")
    body = read(size)
    if len(body) < size:
        raise ProtocolError("a record cut short")
    try:
        record = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ProtocolError(f"a record that is not JSON ({type(err).__name__})") from err
    if not isinstance(record, dict) or not isinstance(record.get("t"), str):
        raise ProtocolError("a record without its kind")
    return record


# --- values ------------------------------------------------------------------------------------


class Opaque(Exception):
    """A value outside the encoding (a type of its own, too deep, too big)."""


_SCALARS = {
    type(None): lambda v: ["n"],
    bool: lambda v: ["b", v],
    int: lambda v: ["i", hex(v)],
    float: lambda v: ["f", v.hex()],
    complex: lambda v: ["c", v.real.hex(), v.imag.hex()],
    str: lambda v: ["s", v],
    bytes: lambda v: ["y", v.hex()],
}
_SEQUENCES = {list: "l", tuple: "t", set: "e", frozenset: "z"}


def encode(value):
    """The value's encoding; Opaque when it has none. Calls no method of the value's own: only exact
    built-in types are looked into."""
    count = [0]

    def enc(v, depth):
        count[0] += 1
        if depth > MAX_DEPTH or count[0] > MAX_ITEMS:
            raise Opaque
        kind = type(v)
        if kind in _SCALARS:
            return _SCALARS[kind](v)
        if kind in _SEQUENCES:
            return [_SEQUENCES[kind], [enc(x, depth + 1) for x in list(v)]]
        if kind is dict:
            return ["d", [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in list(v.items())]]
        raise Opaque

    try:
        return enc(value, 0)
    except (Opaque, RecursionError, RuntimeError, MemoryError) as err:  # RuntimeError: changed while read
        raise Opaque from err


_BUILD = {"l": list, "t": tuple, "e": set, "z": frozenset}


def decode(data):
    """The value back; ProtocolError for anything that is not an encoding."""
    count = [0]

    def dec(node, depth):
        count[0] += 1
        if depth > MAX_DEPTH or count[0] > MAX_ITEMS:
            raise ProtocolError("an encoded value too deep or too large")
        if not isinstance(node, list) or not node or not isinstance(node[0], str):
            raise ProtocolError("an encoded value without its tag")
        tag, args = node[0], node[1:]
        shape = [type(a) for a in args]
        if tag == "n" and shape == []:
            return None
        if tag == "b" and shape == [bool]:
            return args[0]
        if tag == "i" and shape == [str] and len(args[0]) < MAX_RECORD:
            return int(args[0], 16)
        if tag == "f" and shape == [str]:
            return float.fromhex(args[0])
        if tag == "c" and shape == [str, str]:
            return complex(float.fromhex(args[0]), float.fromhex(args[1]))
        if tag == "s" and shape == [str]:
            return args[0]
        if tag == "y" and shape == [str]:
            return bytes.fromhex(args[0])
        if tag in _BUILD and shape == [list]:
            return _BUILD[tag](dec(x, depth + 1) for x in args[0])
        if tag == "d" and shape == [list]:
            pairs = []
            for pair in args[0]:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ProtocolError("an encoded dict item that is not a pair")
                pairs.append((dec(pair[0], depth + 1), dec(pair[1], depth + 1)))
            return dict(pairs)
        raise ProtocolError(f"an encoded value of unknown form {tag!r}")

    try:
        return dec(data, 0)
    except (ValueError, TypeError, OverflowError, RecursionError) as err:  # a bad number, an unhashable key
        raise ProtocolError(f"an encoded value that does not decode ({type(err).__name__})") from err
