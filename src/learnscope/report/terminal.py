"""Terminal output: the claims table printed at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def print_claims(result: dict[str, Any], console: Console) -> None:
    colour = {"reproduced": "green", "partial": "yellow"}.get(result["verdict"], "red")
    table = Table(title=f"{result['study']}: [bold {colour}]{result['verdict']}[/]",
                  show_lines=False, expand=False)
    table.add_column("claim", style="cyan", overflow="fold")
    table.add_column("measured", overflow="fold")
    table.add_column("expected", overflow="fold")
    table.add_column("", no_wrap=True)
    for c in result["claims"]:
        mark = "[green]holds[/]" if c["holds"] else "[red]fails[/]"
        if not c.get("gating", True):
            mark += " [dim](info)[/]"
        table.add_row(c["id"], _fmt(c["measured"]), c["threshold"], mark)
    console.print(table)
