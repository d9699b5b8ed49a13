"""What the judge (sandbox/judge.py) holds back of each test: the literal side of each top-level
comparison assert that has one (wire.withheld_side), replaced by `...` in the source the child gets.

The replacement keeps the statements, the line numbers and the columns after it, so the child's
tracebacks point where the test's own would; `Test.restore` puts the test's own lines back in them.
"""

import ast
import re

if __package__:  # on the host, as sandbox.held
    from sandbox import wire
else:  # in the sandbox, imported by the judge
    import wire


class Held:
    """One comparison assert whose literal side (`side`) the judge keeps."""

    def __init__(self, stmt, side, line):
        node = stmt.test.left if side == "left" else stmt.test.comparators[0]
        self.side, self.node, self.line = side, node, line
        self.value, self.source = ast.literal_eval(node), ast.unparse(node)
        self.symbol, self.holds = wire.OPS[type(stmt.test.ops[0])]
        self.lineno = stmt.lineno


class Test:
    def __init__(self, index, source):
        self.source, self.shown, self.held = source, source, {}
        self.filename = f"test_{index}.py"
        try:
            tree = ast.parse(source)
            for index, stmt in enumerate(tree.body):
                side = wire.withheld_side(stmt)
                if side is not None:
                    self.held[index] = Held(stmt, side, _line(source, stmt.lineno))
            if self.held:
                self.shown = _redact(source, [h.node for h in self.held.values()])
                if len(ast.parse(self.shown).body) != len(tree.body):
                    raise ValueError("the redacted test has other statements")
        except Exception:  # noqa: BLE001 - a test that does not parse (or redact) is sent whole: the child reports it
            self.shown, self.held = source, {}

    def restore(self, traceback):
        """The child's traceback with this test's own lines where it shows the redacted ones."""
        if not self.held:
            return traceback
        out, marker = [], re.compile(rf'^  File "{re.escape(self.filename)}", line (\d+), in ')
        lines = traceback.split("\n")
        for i, text in enumerate(lines):
            found = marker.match(lines[i - 1]) if i else None
            if found and text.startswith("    "):
                text = "    " + _line(self.source, int(found.group(1))).strip()
            out.append(text)
        return "\n".join(out)


def _line_starts(source):
    return [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", source)]


def _line(source, lineno):
    starts = _line_starts(source)
    if not 0 < lineno <= len(starts):
        return ""
    end = starts[lineno] if lineno < len(starts) else len(source)
    return source[starts[lineno - 1] : end].rstrip("\r\n")


def _redact(source, nodes):
    """`source` with each node's text replaced by `...`, `_` when shorter, padded to its width (in
    parentheses, with its line breaks, when it spans lines): the statements, the line numbers and the
    columns after it stay as they were, so the child's tracebacks point where the test's do."""
    starts = _line_starts(source)

    def offset(lineno, col):  # ast's columns count UTF-8 bytes
        line = source[starts[lineno - 1] :]
        return starts[lineno - 1] + len(line.encode("utf-8", "surrogatepass")[:col].decode("utf-8", "ignore"))

    for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset), reverse=True):
        start, end = offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)
        breaks = node.end_lineno - node.lineno
        if breaks:
            tail = end - starts[node.end_lineno - 1]  # of the literal, on its last line
            text = "(..." + "\n" * breaks + " " * (tail - 1) + ")"
        else:
            text = ("..." if end - start >= 3 else "_").ljust(end - start)
        source = source[:start] + text + source[end:]
    return source
