"""Progress reporting that stays readable in log files.

`progress(iterable, desc, unit)` is a tqdm bar when stderr is a terminal. Otherwise (Snakemake runs every stage as
`ssmttm <verb> ... 2> logs/...log`) it logs plain lines through `logging` instead of carriage-return bars:

    INFO ssmttm.progress: segment shard-00000: 12/40 tracks (30%), 3.1 tracks/s, eta 9 s

one after the first item, one every ~10% of the total (or every 30 s, whichever comes first) and one after the last
item, so a log holds at most a few dozen progress lines per loop however long it is.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

STEP_FRACTION = 0.1  # a line every 10% of the total...
STEP_SECONDS = 30.0  # ...or every 30 s, whichever comes first
_now = time.monotonic  # replaced in tests


def progress(
    iterable: Iterable[T],
    desc: str,
    unit: str = "it",
    total: int | None = None,
    *,
    enabled: bool = True,
    leave: bool = True,
) -> Iterator[T]:
    """Iterate over `iterable`, reporting progress on stderr (a tqdm bar) or in the log (plain lines).

    `unit` is singular, as in tqdm ("track"); `total` defaults to `len(iterable)` when it has one. `enabled=False`
    reports nothing; `leave=False` clears the bar when done (the log lines are always kept).
    """
    if not enabled:
        return iter(iterable)
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if _is_terminal(sys.stderr):
        from tqdm import tqdm

        return iter(tqdm(iterable, desc=desc, unit=unit, total=total, leave=leave, file=sys.stderr))
    return _logged(iterable, desc, unit, total)


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def _logged(iterable: Iterable[T], desc: str, unit: str, total: int | None) -> Iterator[T]:
    step = max(1, round(total * STEP_FRACTION)) if total else None
    start = last_time = _now()
    next_count: float = 1  # the first item always gets a line
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = _now()
        if done >= next_count or now - last_time >= STEP_SECONDS:
            if total is None or done < total:  # the last item's line is written after the loop
                log.info("%s", format_line(desc, unit, done, total, now - start))
            last_time = now
            next_count = (done // step + 1) * step if step else math.inf  # no total: time only
    if done:
        log.info("%s", format_line(desc, unit, done, total, _now() - start, final=True))


def format_line(desc: str, unit: str, done: int, total: int | None, elapsed: float, final: bool = False) -> str:
    """'desc: 12/40 tracks (30%), 3.1 tracks/s, eta 9 s'; with `final`, the time taken instead of the eta."""
    units = plural(unit)
    parts = [f"{desc}: {done}/{total} {units} ({100 * done // total}%)" if total else f"{desc}: {done} {units}"]
    rate = done / elapsed if elapsed > 0 else None
    if rate is not None:
        parts.append(f"{rate:.3g} {units}/s" if rate >= 1 else f"{1 / rate:.3g} s/{unit}")
    if final:
        parts.append(f"done in {format_seconds(elapsed)}")
    elif total and rate:
        parts.append(f"eta {format_seconds(max(total - done, 0) / rate)}")
    return ", ".join(parts)


def plural(unit: str) -> str:
    if unit.endswith(("s", "x", "ch", "sh")):
        return unit if unit.endswith("s") else unit + "es"
    return unit + "s"


def format_seconds(seconds: float) -> str:
    """'9 s', '2 min 05 s', '1 h 03 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
