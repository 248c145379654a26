"""Rendering for people: aligned tables, records, times, event details, and a progress bar."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from infrastructure.cli.context import Context
from infrastructure.cli.escaping import printable

# Rendering for people ---------------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Simple aligned columns: a header line, then one line per row."""
    lines = [list(headers), *([printable(str(cell)) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def render_record(pairs: Sequence[tuple[str, str]]) -> str:
    """One object, a field per line: `label   value`."""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(
        f"{label.ljust(width)}  {printable(str(value))}".rstrip() for label, value in pairs
    )


def when(iso_text: str | None, empty: str = "-") -> str:
    """`2026-11-27T10:40:08.123456Z` -> `2026-11-27 10:40:08Z`."""
    return f"{iso_text[:19].replace('T', ' ')}Z" if iso_text else empty


def _actor_cell(actor: dict[str, Any] | None) -> str:
    if not actor:
        return "-"
    where = f" from {actor['address']}" if actor.get("address") else ""
    return f"{actor['kind']} {actor['name']}{where}"


def _detail_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return str(len(value))
        return ",".join(str(v) for v in value) or "[]"
    if isinstance(value, dict):
        return str(len(value))
    return str(value)


def _details(event: dict[str, Any], leave_out: Iterable[str] = ()) -> str:
    """`name=prod models=a/b` from an event's fields (empty ones left out)."""
    skip = {"version", "type", "at", "actor", *leave_out}
    return " ".join(
        f"{name}={_detail_value(value)}"
        for name, value in event.items()
        if name not in skip and value is not None and value != [] and value != {}
    )


def section(ctx: Context, title: str, body: str) -> None:
    ctx.out()
    ctx.out(title)
    ctx.out(body)


@dataclass
class ProgressBar:
    """`keys [##########..........] 50% 1000/2000` on stderr: redrawn in place on a terminal,
    a line per tenth otherwise (so a log shows it too)."""

    stream: TextIO
    name: str
    width: int = 30
    _tenth: int = -1

    def update(self, _name: str, position: int, head: int) -> None:
        fraction = min(1.0, position / head) if head else 1.0
        filled = int(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.name} [{bar}] {fraction:4.0%} {position}/{head}"
        if self.stream.isatty():
            self.stream.write(f"\r{line}")
        elif int(fraction * 10) != self._tenth:
            self._tenth = int(fraction * 10)
            self.stream.write(f"{line}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()


EVENT_COLUMNS = ("VERSION", "TYPE", "AT", "ACTOR", "DETAILS")


def events_table(events: list[dict[str, Any]], leave_out: Iterable[str] = ()) -> str:
    rows = [
        [
            str(e["version"]),
            e["type"],
            when(e["at"]),
            _actor_cell(e.get("actor")),
            _details(e, leave_out),
        ]
        for e in events
    ]
    return render_table(EVENT_COLUMNS, rows) if rows else "(none)"
