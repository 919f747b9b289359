"""The one progress bar of casebase (ingest, re-embedding, training epochs).

Library code never prints: the bar is tqdm's, drawn on stderr only when it is a terminal
(``enabled=None``), forced on with ``enabled=True`` and silenced with ``enabled=False``
(``--no-progress``). Whether or not a bar was drawn, closing it logs one DEBUG line with the
count and the rate, so a run under a scheduler leaves its speed in the log.

A bar that is off is a no-op object with the same methods, so callers never test for
``None``. tqdm is imported only when a bar is drawn.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any

__all__ = ["Progress", "progress_bar"]

logger = logging.getLogger(__name__)


class Progress:
    """A counter with an optional tqdm bar; use :func:`progress_bar`."""

    def __init__(self, desc: str, unit: str, bar: Any = None) -> None:
        self.desc, self.unit, self._bar = desc, unit, bar
        self.count = 0
        self._started = time.perf_counter()
        self._closed = False

    def update(self, n: int = 1) -> None:
        """``n`` more items done (usable as ``embed_stream``'s ``progress`` callback)."""
        self.count += n
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the bar (e.g. the running loss)."""
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self) -> None:
        """Close the bar (idempotent) and log the count and rate at DEBUG."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        seconds = time.perf_counter() - self._started
        rate = self.count / seconds if seconds > 0 else 0.0
        logger.debug("%s: %d %s in %.1f s (%.1f %s/s)", self.desc, self.count, self.unit,
                     seconds, rate, self.unit)  # fmt: skip

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def progress_bar(
    total: int,
    *,
    desc: str,
    unit: str = "img",
    enabled: bool | None = None,
    leave: bool = True,
    smoothing: float = 0.3,
) -> Progress:
    """A progress bar over ``total`` items.

    ``enabled``: ``None`` draws it only when stderr is a terminal, ``True`` always,
    ``False`` never. Nothing is drawn for ``total == 0``. ``leave``: keep the finished
    bar on screen (one per run) or clear it (one per epoch). ``smoothing``: tqdm's weight
    of the latest rate in the ETA (lower is steadier).
    """
    if total == 0 or enabled is False:
        return Progress(desc, unit)
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=None if enabled is None else False,
        dynamic_ncols=True,
        smoothing=smoothing,
        leave=leave,
    )
    return Progress(desc, unit, bar)
