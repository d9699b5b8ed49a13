"""Progress bars of long commands (infra/progress.py): drawn on a terminal only, with the count and a note."""

from __future__ import annotations

import io

from infra.progress import bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_nothing_is_drawn():
    stream = io.StringIO()
    with bar("eval", 3, stream=stream) as advance:
        assert advance is None
    assert stream.getvalue() == ""


def test_on_a_terminal_the_bar_counts_and_shows_its_note():
    stream = Terminal()
    with bar("eval", 3, stream=stream) as advance:
        assert advance is not None
        for i in range(3):
            advance(note=f"passed {i + 1}/{i + 1}")
    drawn = stream.getvalue()
    assert "eval" in drawn and "3/3" in drawn and "passed 3/3" in drawn


def test_a_bar_can_be_put_at_a_count():
    stream = Terminal()
    with bar("training", 40, stream=stream) as advance:
        assert advance is not None
        advance(to=25, note="contrastive loss 0.412")
    drawn = stream.getvalue()
    assert "25/40" in drawn and "contrastive loss 0.412" in drawn
