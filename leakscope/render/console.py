"""Terminal output with rich: the live per-loop lines, the progress bar, the summary.

Strings from a run (paths, reprs, the verdict's sentence) come from user code
or from a run file, so they never enter rich markup: they pass through
``safe.printable`` and go into ``Text`` objects, which rich shows as they are.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console, Group
from rich.markup import escape
from rich.padding import Padding
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from leakscope.model.runfile import Holder, LineDelta, Loop, Run, Site
from leakscope.model.units import format_bytes, format_count, short_unit
from leakscope.render.paths import short_location, site_location
from leakscope.render.safe import displayed, printable

if TYPE_CHECKING:
    from rich.status import Status

class LiveProcess(Protocol):
    """One process of a live `leakscope run` or `attach`, as the status line shows it."""

    @property
    def process(self) -> dict[str, Any]: ...

    @property
    def units(self) -> int: ...


class LiveRun(Protocol):
    """What the status line reads of a run being watched (the launcher's ``Watch``)."""

    @property
    def processes(self) -> Sequence[LiveProcess]: ...


# Lines shown per loop in the live view (the rest are summed up in one line).
LIVE_LINES = 8


def _blocks(count: int) -> str:
    return f"{count:+,} block{'s' if abs(count) != 1 else ''}"


class LiveLoopPrinter:
    """One block per measured loop, as Swoole Tracker prints its leak analysis."""

    def __init__(self, console: Console, unit: str = "loop") -> None:
        self.console = console
        self.unit = unit
        self.warmup_announced = False

    def on_measuring(self, warmup_loops: int) -> None:
        self.console.print(
            f"[dim]warm-up: {warmup_loops} untraced loop{'s' if warmup_loops != 1 else ''}; "
            "tracing from here[/dim]"
        )

    def on_phase(self, phase: str, info: dict) -> None:
        if phase == "locate":
            self.console.print(
                "[yellow]growth detected by the cheap counters; tracing a few loops "
                "to locate it[/yellow]"
            )
        elif phase == "memray":
            self.console.print(
                f"[yellow]native memory grows; locating it with memray over "
                f"{info.get('loops', 'a few')} more loops[/yellow]"
            )

    def on_loop(self, loop: Loop, changes: list[LineDelta]) -> None:
        if loop.warmup:
            return
        if loop.phase == "detect":
            if loop.index % 25 == 0 and loop.allocated_blocks is not None:
                self.console.print(
                    f"[dim]{self.unit} {loop.index}: {loop.allocated_blocks or 0:,} blocks, "
                    f"RSS {format_bytes(loop.rss_bytes or 0)} (untraced)[/dim]"
                )
            return
        net = loop.net_bytes or 0
        style = "red" if net > 0 else ("green" if net < 0 else "dim")
        kept = "kept" if net >= 0 else "freed"
        self.console.print(
            f"[bold]{self.unit} {loop.index}[/bold]: [{style}]{format_bytes(net, signed=True)} "
            f"{kept}[/{style}] [dim]({format_bytes(loop.traced_bytes or 0)} in "
            f"{loop.traced_blocks or 0:,} blocks since warm-up)[/dim]"
        )
        if loop.span_from is not None:
            # Per-line diffs run on a time budget: this one covers every loop since the last.
            self.console.print(
                f"    [dim]lines changed over {self.unit}s {loop.span_from}-{loop.index}:[/dim]")
        grew = [c for c in changes if c.count_diff > 0 or (c.count_diff == 0 and c.size_diff > 0)]
        freed = [c for c in changes if c not in grew]
        for change in grew[:LIVE_LINES]:
            self.console.print(
                f"    {escape(printable(site_location(change.file, change.line)))} => "
                f"[red]{format_bytes(change.size_diff, signed=True)}[/red] "
                f"[dim]{_blocks(change.count_diff)}[/dim]",
                highlight=False,
            )
        for change in freed[: max(0, LIVE_LINES - len(grew[:LIVE_LINES]))]:
            self.console.print(
                f"    [green]freed[/green] "
                f"{escape(printable(site_location(change.file, change.line)))} => "
                f"[green]{format_bytes(change.size_diff, signed=True)}[/green] "
                f"[dim]{_blocks(change.count_diff)}[/dim]",
                highlight=False,
            )
        hidden = len(changes) - min(len(changes), LIVE_LINES)
        if hidden > 0:
            self.console.print(f"    [dim]... {hidden} more lines changed[/dim]")


class ProgressObserver:
    """--quiet: one progress bar instead of the per-loop lines."""

    def __init__(self, console: Console, iterations: int) -> None:
        self.iterations = iterations
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[kept]}"), TimeElapsedColumn(),
            console=console, transient=True,
        )
        self.task = self.progress.add_task("warming up", total=None, kept="")

    def __enter__(self) -> ProgressObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_measuring(self, warmup_loops: int) -> None:
        self.progress.update(self.task, description="measuring", total=self.iterations,
                             completed=0)

    def on_phase(self, phase: str, info: dict) -> None:
        self.progress.update(self.task, description="locating", total=None, completed=0)

    def on_loop(self, loop: Loop, changes: list[LineDelta]) -> None:
        if loop.warmup:
            return
        if loop.traced_bytes is None:
            if loop.allocated_blocks is None:  # a unit that did not read the counters
                self.progress.update(self.task, advance=1)
                return
            blocks = f"{loop.allocated_blocks:,} blocks"
            self.progress.update(self.task, advance=1, kept=blocks)
            return
        kept = format_bytes(loop.traced_bytes)
        self.progress.update(self.task, advance=1, kept=f"{kept} kept")


# -------------------------------------------------------------------- summary

_KIND_STYLE = {"none": "green", "reachable": "red", "cyclic-garbage": "yellow", "native": "magenta"}


def summary(run: Run, max_sites: int = 8) -> Group:
    """Verdict first, then the holders and top sites, then the projection."""
    run = displayed(run)
    verdict = run.verdict
    assert verdict is not None
    short = short_unit(run.unit)
    parts: list = []
    style = _KIND_STYLE.get(verdict.kind, "red") if verdict.leak else "green"
    title = "LEAK" if verdict.leak else ("UNDECIDED" if verdict.undecided else "NO LEAK")
    if verdict.undecided:
        style = "yellow"
    if verdict.partial:
        title += " (partial)"
    head = Text.assemble((title, f"bold {style}"), "  ", verdict.summary)
    facts = (
        f"kind {verdict.kind} · {format_bytes(verdict.bytes_per_iteration)}/{short} · "
        f"{format_count(verdict.blocks_per_iteration)} blocks/{short} · "
        f"confidence {verdict.confidence:.2f} · {len(run.measured)} measured + "
        f"{len(run.loops) - len(run.measured)} warm-up {run.unit}s · mode {run.mode}"
    )
    engine = (run.observations.get("locator") or {}).get("engine")
    if engine in ("memray", "tracemalloc"):
        facts += f" · located with {engine}"
    parts.append(Panel(Group(head, Text(facts, style="dim")), border_style=style, expand=True))
    growing_holders = [h for h in run.holders if h.growing]
    if growing_holders:
        parts.append(Text("Growing containers", style="italic"))
        for holder in growing_holders[:5]:
            parts.append(_holder_lines(holder, short))
    for bounded in [b for b in run.bounded if b.get("filling") or b.get("full")][:3]:
        state = "full" if bounded.get("full") else "filling"
        parts.append(Text(
            f"bounded: {bounded['path']} ({bounded['type']}) {state}, "
            f"{bounded['items']:,} of {bounded['bound']:,}", style="dim",
        ))
    shown = [s for s in run.sites if s.growing][:max_sites]
    if not shown and not verdict.leak:
        shown = [s for s in run.sites if s.bytes_per_iteration > 0][:3]
    if shown:
        # Three columns, the site's file:line on a row of its own: at 80 columns a
        # fourth column of paths would fold a file:line across rows.
        table = Table(
            title="Growing allocation sites" if verdict.leak else "Largest kept sites",
            title_justify="left", expand=True, box=None, pad_edge=False,
        )
        table.add_column("site", overflow="fold", ratio=1)
        table.add_column(Text(f"B/{short}"), justify="right", no_wrap=True)
        table.add_column("kept", justify="right", no_wrap=True)
        for site in shown:
            table.add_row(
                _site_cell(site), format_bytes(site.bytes_per_iteration),
                format_bytes(site.kept_bytes),
            )
        parts.append(table)
    if verdict.projection:
        parts.append(Text(verdict.projection, style="bold" if verdict.leak else "dim"))
    return Group(*parts)


def _holder_lines(holder: Holder, short: str) -> Padding:
    """One growing container: its path, then what and where, wrapped between words only."""
    made = ", ".join(short_location(m) for m in holder.callables_defined_at or
                     holder.items_made_at)
    text = Text()
    text.append(holder.path, style="bold")
    text.append(f"\n{holder.type}, {holder.role}: +{format_count(holder.items_per_iteration)} "
                f"items/{short}, {holder.items_first:,} → {holder.items_last:,}")
    if made:
        text.append(f"\nmade at {made}", style="dim")
    if holder.grown_at:
        text.append(f"\nadded at {short_location(holder.grown_at)}", style="dim")
    return Padding(text, (0, 0, 0, 2))


def _site_cell(site: Site) -> Text:
    """``file:line`` first, the function and the user's line to open under it."""
    user = site.user_frame
    same = user is not None and (user.file, user.line) == (site.file, site.line)
    cell = Text(site_location(site.file, site.line))
    cell.append(f"\n  {site.function}", style="dim")
    if site.native:
        cell.append(f"\n  native {site.native.get('function', '?')} "
                    f"({site.native.get('library', '<unknown>')}), located by {site.engine}")
    if user is not None and not same:
        cell.append("\n  open first ")
        cell.append(site_location(user.file, user.line), style="bold")
    return cell


def print_summary(console: Console, run: Run) -> None:
    console.print(summary(run))


class ConsoleRenderer:
    """``summary`` as the text a terminal ``width`` columns wide shows, less the colours.

    The CLI prints ``summary(run)`` on its own console (the terminal's width and
    colours, live progress around it); this is the same output as a string, for
    anything that needs it fixed (tests compare it line for line).
    """

    def __init__(self, width: int = 100) -> None:
        self.width = width

    def render(self, run: Run, /) -> str:
        console = Console(width=self.width, record=True, color_system=None,
                          force_terminal=False, file=io.StringIO())
        console.print(summary(run))
        return console.export_text()


# ------------------------------------------------------------ leakscope run


class RunProgress:
    """One live line while a real worker runs: each process and its units so far."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled and console.is_terminal
        self._status: Status | None = None
        self._last_print = 0.0

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self._status = self.console.status("starting the command")
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)

    def update(self, watch: LiveRun, elapsed: float) -> None:
        if self._status is None:
            return
        parts = [
            f"{log.process.get('role')} {log.process.get('pid')}: "
            f"{log.units} {log.process.get('unit', 'unit')}s"
            for log in watch.processes
            if log.units or len(watch.processes) <= 4
        ]
        text = " · ".join(parts[:6]) or "waiting for the first unit"
        self._status.update(escape(printable(f"{elapsed:5.1f}s  {text}")))


def print_processes(console: Console, run: Run) -> None:
    """The table `leakscope run` prints first: every traced process and its verdict."""
    table = Table(title="Processes", title_justify="left", expand=True, box=None,
                  pad_edge=False)
    table.add_column("pid", justify="right")
    table.add_column("role", overflow="fold")
    table.add_column("units", justify="right")
    table.add_column("traced", justify="right")
    table.add_column("verdict")
    table.add_column("rate", justify="right")
    table.add_column("peak RSS", justify="right")
    run = displayed(run)
    for process in run.processes:
        info = process.process or {}
        verdict = process.verdict
        unit = short_unit(process.unit)
        rate: str | Text
        if verdict is None or process.observations.get("idle"):
            state, rate = "[dim]no work of its own[/dim]", "-"
        elif verdict.leak:
            state = f"[bold red]LEAK[/bold red] ({verdict.kind})"
            rate = Text(verdict.rate(unit))
        else:
            state, rate = "[green]no leak[/green]", "-"
        peak = info.get("peak_rss_bytes")
        table.add_row(
            Text(str(info.get("pid", "?"))), Text(printable(str(info.get("role", "?")))),
            Text(f"{len(process.measured)}+{len(process.loops) - len(process.measured)} "
                 f"{process.unit}s"), Text(str(info.get("traced_units", 0) or "-")), state, rate,
            format_bytes(peak) if peak else "-",
        )
    console.print(table)
    _print_locator_notes(console, run)
    notes = [p for p in run.processes if (p.process or {}).get("forks_per_unit")]
    for process in notes:
        info = process.process or {}
        console.print(Text(printable(
            f"{info.get('role')} (pid {info.get('pid')}) forks a work horse "
            f"per {process.unit}: what a {process.unit} keeps dies with its horse, so this "
            "measures the worker process itself"
        ), style="dim"))


def _print_locator_notes(console: Console, run: Run) -> None:
    """Why a process's traced window located with tracemalloc though memray was asked for:
    one line per reason, naming the processes it applies to."""
    pids: dict[str, list[str]] = {}
    for process in run.processes:
        note = (process.observations.get("locator") or {}).get("note")
        if note:
            pids.setdefault(str(note), []).append(str((process.process or {}).get("pid", "?")))
    for note, which in pids.items():
        label = "pid" if len(which) == 1 else "pids"
        console.print(Text(printable(f"{note} ({label} {', '.join(which)})"), style="dim"))
