"""Progress of long commands, on a terminal only: a bar with the count, the rate and an ETA (rich). Where
stderr is not a terminal (a log file, CI) nothing is drawn and the command prints its own lines."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Advance = Callable[..., None]


def on_terminal(stream=None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def bar(description: str, total: int | None, *, stream=None) -> Iterator[Advance | None]:
    """`advance(n=1, note="")` moves the bar (the note: e.g. the pass rate so far), `advance(to=k, note=...)`
    puts it at k done; None off a terminal."""
    if not on_terminal(stream):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.2f}/s" if task.speed else "-/s")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=Console(file=stream or sys.stderr)) as progress:
        task = progress.add_task(description, total=total, note="")

        def advance(n: int = 1, note: str = "", *, to: int | None = None) -> None:
            if to is None:
                progress.update(task, advance=n, note=note)
            else:
                progress.update(task, completed=to, note=note)

        yield advance
