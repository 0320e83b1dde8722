"""The live progress line of `changefold generate` and its final summary text.

On a terminal the line is redrawn by rich four times a second from its own
thread (the writer only bumps counters); elsewhere (CI logs, pipes) a plain
line is printed every few seconds.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.text import Text

from engine.lab.workload.plan import to_datetime
from engine.lab.workload.runner import RunSummary
from engine.lab.workload.writer import Tally

_PLAIN_EVERY_S = 5.0


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


class ProgressLine:
    def __init__(self, console: Console, domain: str, rate: float | None, duration_s: float):
        self.console = console
        self.domain = domain
        self.rate = rate
        self.duration_s = duration_s
        self.tally: Tally | None = None
        self.phase = "setup"
        self._live: Live | None = None
        self._last_plain = time.monotonic()

    def __enter__(self) -> ProgressLine:
        if self.console.is_terminal:
            self._live = Live(
                console=self.console,
                get_renderable=self._render,
                refresh_per_second=4,
                transient=True,
            )
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()

    def setup_progress(self, tally: Tally) -> None:
        self.phase, self.tally = "setup", tally
        self._plain()

    def setup_done(self, tally: Tally) -> None:
        self.console.print(
            f"{self.domain}: setup wrote {tally.events:,} events in {tally.txns:,} "
            f"transactions ({tally.seconds:.1f} s)",
            highlight=False,
        )
        self.phase = "stream"
        self.tally = None

    def stream_progress(self, tally: Tally) -> None:
        self.phase, self.tally = "stream", tally
        self._plain()

    def _plain(self) -> None:
        if self._live is not None:
            return
        now = time.monotonic()
        if now - self._last_plain >= _PLAIN_EVERY_S:
            self._last_plain = now
            self.console.print(self._render(), highlight=False, soft_wrap=True)

    def _render(self) -> Text:
        t = self.tally
        if t is None:
            return Text(f"{self.domain}: {self.phase} ...")
        target = f"target {self.rate:,.0f}" if self.rate else "unpaced"
        length = f" / {_clock(self.duration_s)}" if self.duration_s else ""
        line = Text(f"{self.domain} ", style="bold")
        line.append(f"{t.events:,} events", style="cyan")
        line.append(f" in {t.txns:,} txns  ")
        line.append(f"{t.rate:,.0f} events/s", style="green")
        line.append(f" ({target})  {_clock(time.monotonic() - t.started)}{length}")
        if self.phase == "stream" and t.sim_us:
            line.append(f"  simulated {to_datetime(t.sim_us):%Y-%m-%d %H:%M}", style="dim")
        if self.phase == "setup":
            line.append("  (setup)", style="dim")
        return line


def summary_lines(s: RunSummary) -> list[str]:
    """Human summary of a run, one line each."""
    o, st = s.options, s.stream
    target = f"target {o.rate:,.0f}" if o.rate else "unpaced"
    state = "interrupted" if s.interrupted else "done"
    lines = [
        f"{s.domain} {state}: {st.events:,} events in {st.txns:,} transactions over "
        f"{st.seconds:.1f} s = {st.rate:,.1f} events/s ({target}); setup {s.setup.events:,} "
        f"events in {s.setup.seconds:.1f} s",
        f"  seed {o.seed}, simulated time {s.sim_start:%Y-%m-%d %H:%M} -> "
        f"{s.sim_end:%Y-%m-%d %H:%M} UTC",
    ]
    if s.earlier_runs:
        steps = sum(r.steps for r in s.earlier_runs)
        lines.append(
            f"  seed {o.seed} was generated into this database before ({len(s.earlier_runs)} "
            f"run(s), {steps:,} transactions); this run continued after them: new ids, later "
            "simulated time, other uuids"
        )
    if s.reconnects:
        lines.append(
            f"  lost the connection to Postgres {s.reconnects} time(s); reconnected "
            f"({s.outage_s:.1f} s in all) and resumed at the next planned transaction"
        )
    if st.fell_behind:
        lines.append(
            f"  Postgres could not keep up with the target rate ({st.fell_behind} times more "
            f"than 1 s behind)"
        )
    changes = s.setup.changes + st.changes
    for table in sorted({t for t, _ in changes}):
        parts = [
            f"{op} {changes[(table, op)]:,}"
            for op in ("insert", "update", "delete")
            if changes[(table, op)]
        ]
        lines.append(f"  {table:<22} " + "  ".join(parts))
    if s.hot_keys and o.hot_keys > 0:
        lines.append(f"  hot keys ({o.hot_keys:.0%} of activity): {s.hot_keys}")
    if s.fraud_cases:
        cases = ", ".join(f"{k} {v}" for k, v in s.fraud_cases.items())
        lines.append(f"  fraud cases recorded in bank.fraud_truth: {cases}")
    return lines
