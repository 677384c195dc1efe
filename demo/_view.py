"""The demo's live view: a table redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from collections import deque
from typing import TextIO

from demo._stats import Sample

__all__ = ["View"]

_BAR = 28


def _n(value: int) -> str:
    return f"{value:,}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


class View:
    """``update(sample)`` a few times per second; ``event(text)`` for kills and restarts."""

    def __init__(self, title: str, target: int, groups: list[str], out: TextIO = sys.stdout) -> None:
        self.title = title
        self.target = target
        self.groups = groups
        self.out = out
        self.tty = out.isatty()
        self.interval = 0.25 if self.tty else 2.0
        self._events: deque[str] = deque(maxlen=6)
        self._drawn = 0
        self._last: Sample | None = None
        self._rate_base: Sample | None = None
        self._rate = 0.0
        if self.tty:
            out.write("\x1b[?25l")  # hide the cursor while redrawing
        else:
            out.write(f"{title}\n")
        out.flush()

    def event(self, elapsed: float, text: str) -> None:
        line = f"{elapsed:6.1f} s  {text}"
        if self.tty:
            self._events.append(line)
            if self._last is not None:
                self.update(self._last)
        else:
            self.out.write(f"[{elapsed:6.1f} s] {text}\n")
            self.out.flush()

    def _update_rate(self, sample: Sample) -> None:
        base = self._rate_base
        if base is None:
            self._rate_base = sample
        elif sample.at - base.at >= 1.0:
            self._rate = (sample.written - base.written) / (sample.at - base.at)
            self._rate_base = sample

    def update(self, sample: Sample) -> None:
        if sample is not self._last:
            self._update_rate(sample)
        self._last = sample
        if self.tty:
            self._draw(self._frame(sample))
        else:
            groups = " ".join(
                f"{g} {sample.applied[g]} (lag {sample.lag(g)}, p50/p99 {_ms(sample.p50_ms[g])}/{_ms(sample.p99_ms[g])})"
                for g in self.groups
            )
            self.out.write(
                f"[{sample.at:6.1f} s] written {sample.written}/{self.target} · backlog {sample.backlog} · "
                f"relayed {sample.relayed} · {groups}\n"
            )
            self.out.flush()

    def _frame(self, s: Sample) -> list[str]:
        done = min(1.0, s.written / self.target) if self.target else 0.0
        filled = round(done * _BAR)
        bar = "█" * filled + "░" * (_BAR - filled)
        lines = [
            f"{self.title}   {s.at:6.1f} s",
            "",
            f"  orders written   {bar} {_n(s.written):>8} / {_n(self.target)}   {self._rate:,.0f}/s",
            f"  outbox backlog   {_n(s.backlog):>8}   (committed, not yet acknowledged by the broker)",
            f"  events relayed   {_n(s.relayed):>8}",
            "",
            f"  {'consumer group':<16}{'applied':>10}{'lag':>9}{'commit→effect p50':>20}{'p99':>10}",
        ]
        for g in self.groups:
            lines.append(
                f"  {g:<16}{_n(s.applied[g]):>10}{_n(s.lag(g)):>9}{_ms(s.p50_ms[g]):>20}{_ms(s.p99_ms[g]):>10}"
            )
        lines.append("")
        lines.extend(f"  {e}" for e in self._events)
        return lines

    def _draw(self, lines: list[str]) -> None:
        out = self.out
        if self._drawn:
            out.write(f"\x1b[{self._drawn}F")
        for line in lines:
            out.write(f"{line}\x1b[K\n")
        for _ in range(self._drawn - len(lines)):
            out.write("\x1b[K\n")
        self._drawn = max(self._drawn, len(lines))
        out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\x1b[?25h")
            self.out.flush()
