"""Progress bars for long loops (data generation, validation, evaluation, prediction)."""
import sys

from tqdm import tqdm

__all__ = ["progress"]


def progress(iterable, desc, total=None, unit="it"):
    """``iterable`` wrapped in a tqdm bar on stderr; the bar is left out when stderr is not a terminal
    (logs and CI stay readable) unless the caller iterates long enough for tqdm's own rate limit."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)
