"""Terminal output: the claims table printed at the end of a run.

Values are never broken inside a word: every column is at least as wide as its longest word
(``key=value`` pairs are one word each and go on lines of their own); where a terminal is too
narrow for that, each claim is printed as a short block instead of a table row.
"""

from __future__ import annotations

import textwrap
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _measured(v: Any) -> str:
    """A dict of measurements one ``key=value`` per line; anything else as :func:`_fmt`."""
    if isinstance(v, dict):
        return "\n".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return _fmt(v)


def _longest_word(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


def _status(claim: dict[str, Any]) -> Text:
    if claim["holds"]:
        text = Text("holds", style="green")
    elif claim.get("gating", True):
        text = Text("fails", style="red")
    else:
        text = Text("unseen")  # a weak effect not seen at this size: no failure colour
    if not claim.get("gating", True):
        text.append("*", style="dim")
    return text


_HEADERS = ("status", "claim", "measured", "expected")
_GAP = 3  # between columns: one space of padding each side and the (blank) rule
_NOT_GATING = ("* not gating: reported, does not decide the verdict (unseen: the weak effect "
               "did not show at this size)")


def print_claims(result: dict[str, Any], console: Console) -> None:
    colour = {"reproduced": "green", "partial": "yellow"}.get(result["verdict"], "red")
    title = f"{result['study']}: [bold {colour}]{result['verdict']}[/]"
    rows = [(_status(c), str(c["id"]), _measured(c["measured"]), str(c["threshold"]))
            for c in result["claims"]]
    widths = [max([len(h)] + [_longest_word(r[i].plain if isinstance(r[i], Text) else r[i])
                              for r in rows])
              for i, h in enumerate(_HEADERS)]
    # status and claim never wrap: they need their full width
    widths[0] = max([len("status")] + [len(r[0].plain) for r in rows])
    widths[1] = max([len("claim")] + [len(r[1]) for r in rows])
    if sum(widths) + _GAP * (len(widths) - 1) > console.width:
        _print_blocks(title, rows, console)
    else:
        _print_table(title, rows, widths, console)
    if any(not c.get("gating", True) for c in result["claims"]):
        console.print(_NOT_GATING, style="dim")


def _print_table(title: str, rows: list[tuple[Text, str, str, str]], widths: list[int],
                 console: Console) -> None:
    """Columns of fixed widths, cells wrapped here at spaces (rich's own wrapping can crop the
    last column of a narrow table)."""
    natural = [max([len(h)] + [len(line) for r in rows for line in r[i].splitlines()])
               for i, h in ((2, "measured"), (3, "expected"))]
    room = console.width - widths[0] - widths[1] - _GAP * 3
    w_meas, w_exp = _share(room, natural, widths[2:])
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, expand=False,
                  pad_edge=False, title_justify="left")
    table.add_column("status", no_wrap=True, width=widths[0])
    table.add_column("claim", style="cyan", no_wrap=True, width=widths[1])
    table.add_column("measured", no_wrap=True, width=w_meas)
    table.add_column("expected", no_wrap=True, width=w_exp)
    for status, cid, measured, expected in rows:
        table.add_row(status, cid, Text(_wrap(measured, w_meas)), Text(_wrap(expected, w_exp)))
    console.print(table)


def _share(room: int, natural: list[int], least: list[int]) -> tuple[int, int]:
    """Split ``room`` between two columns: each its natural width if both fit, else each at
    least its longest word and the rest in proportion to what they still lack."""
    if sum(natural) <= room:
        return natural[0], natural[1]
    spare = room - sum(least)
    lack = [n - m for n, m in zip(natural, least, strict=True)]
    first = least[0] + (spare * lack[0] // max(sum(lack), 1))
    return first, room - first


def _wrap(text: str, width: int) -> str:
    return "\n".join(
        "\n".join(textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False))
        or "" for line in text.splitlines())


def _print_blocks(title: str, rows: list[tuple[Text, str, str, str]], console: Console) -> None:
    """One block per claim: status and claim on a line, then measured and expected below it,
    one ``key=value`` per line."""
    console.print(title)
    for status, cid, measured, expected in rows:
        line = status.copy()
        line.append("  ")
        line.append(cid, style="cyan")
        console.print(line)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, style="dim")
        grid.add_column(overflow="fold")
        grid.add_row("", "measured", Text(measured))
        grid.add_row("", "expected", Text(expected))
        console.print(grid)
