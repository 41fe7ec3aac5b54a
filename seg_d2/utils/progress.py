"""Progress bars for long loops (data generation, validation, evaluation, prediction).

On a terminal, a tqdm bar on stderr. Elsewhere (a log file, CI, a pipe), a redrawn bar would be one
endless line of carriage returns, so the same tqdm state is logged instead as a plain line
("predicting: 12/50 [00:30<01:35, 0.40 image/s]") every ``LOG_INTERVAL_S`` seconds, and at the end of a
loop that logged, through the ``seg_d2.progress`` logger (shown where logging is set up, as in seg_d2's
tools). Loops shorter than that log nothing.
"""
import logging
import sys

from tqdm import tqdm

__all__ = ["LOG_INTERVAL_S", "progress"]

LOG_INTERVAL_S = 30.0
_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
_logger = logging.getLogger("seg_d2.progress")


class _LogLines:
    """A file for tqdm that logs each refresh of the bar as one line."""

    def __init__(self, logger):
        self._logger = logger
        self._last = ""

    def write(self, text):
        text = text.strip()
        if text and text != self._last:
            self._last = text
            self._logger.info(text)

    def flush(self):
        pass


def progress(iterable, desc, total=None, unit="it", leave=True):
    """``iterable`` wrapped in a tqdm bar (terminal) or periodic log lines (anywhere else).

    ``total`` defaults to ``len(iterable)``; ``leave=False`` removes the bar when done (nested loops) and,
    when logging, skips the closing line. The wrapper has the iterable's length, so it can stand in for a
    data loader.
    """
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=leave)
    # position=0: nested loops log their own lines instead of moving a cursor up (escape codes in a log)
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=_LogLines(_logger), mininterval=LOG_INTERVAL_S,
                delay=LOG_INTERVAL_S, bar_format=_LOG_FORMAT, leave=leave, position=0)
