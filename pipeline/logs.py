"""Logging for every pulse process: one format, quiet Kafka clients.

While a broker is unreachable aiokafka and kafka-python log the same few errors about ten times
a second per client ("Unable connect to node", "Failed fetch messages", "Unable to update
metadata"): an hour of outage was tens of thousands of identical lines burying everything else.
``RepeatFilter`` lets the first record of each kind through, then at most one per ``window_s``,
saying how many it held back. Only the Kafka clients' records are filtered; ours never are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
KAFKA_LOGGERS = ("kafka", "aiokafka")
CHATTY_LOGGERS = (*KAFKA_LOGGERS, "httpx")
REPEAT_WINDOW_S = 30.0


class RepeatFilter(logging.Filter):
    """Per (logger, level, message template): the first record, then one per ``window_s`` with a count."""

    def __init__(
        self,
        prefixes: tuple[str, ...] = KAFKA_LOGGERS,
        window_s: float = REPEAT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.window_s = window_s
        self.clock = clock
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}  # kind -> (last shown, held back since)
        # one filter serves every handler: the same record gets the same answer from each
        self._record: logging.LogRecord | None = None
        self._answer = True

    def _filtered(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if record is self._record:
            return self._answer
        self._record, self._answer = record, self._decide(record)
        return self._answer

    def _decide(self, record: logging.LogRecord) -> bool:
        if not self._filtered(record.name):
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        shown = self._last.get(kind)
        if shown is not None and now - shown[0] < self.window_s:
            self._last[kind] = (shown[0], shown[1] + 1)
            return False
        if shown is not None and shown[1]:
            record.msg = f"{record.msg} ({shown[1]} more like this in the last {self.window_s:.0f} s)"
        self._last[kind] = (now, 0)
        return True


def setup_logging(level: str) -> None:
    """The root handler with pulse's format; Kafka and HTTP clients at WARNING at least, repeats held back."""
    logging.basicConfig(level=level, format=FORMAT)
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    repeats = RepeatFilter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(repeats)
