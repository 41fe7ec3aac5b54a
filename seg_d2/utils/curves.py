"""Training curves as a PNG (losses, learning rate, evaluation metrics over iterations) from the
``metrics.json`` Detectron2's JSONWriter appends to, so a run can be seen without TensorBoard."""
import json
import logging
import math
import os

__all__ = ["plot_training_curves", "read_metrics"]

logger = logging.getLogger(__name__)


def read_metrics(path):
    """The rows of a metrics.json, by iteration. A resumed run appends rows again from its start: a row
    whose iteration is not past the last one replaces every earlier row from that iteration on. A line
    cut short by a killed job is skipped with a warning."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                iteration = int(row["iteration"])
            except (ValueError, KeyError, TypeError):
                logger.warning(f"{path}:{number}: not a metrics row, skipped: {line.strip()[:80]!r}")
                continue
            if rows and iteration <= rows[-1]["iteration"]:
                rows = [r for r in rows if r["iteration"] < iteration]
            rows.append(row)
    return rows


def _series(rows, key):
    points = [(r["iteration"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p for p in points if math.isfinite(p[1])]


# The metrics drawn for a task, where it has them (else all its metrics without a per-class suffix).
_HEADLINE = {"AP", "AP50", "AP75", "PQ", "PQ_th", "PQ_st", "SQ", "RQ", "mIoU", "fwIoU", "mDice", "mBIoU", "pACC"}
_COLUMNS = 3
_EVALUATION_TASKS = {"bbox", "segm", "panoptic_seg", "sem_seg", "keypoints"}


def _headline(keys):
    """Of one task's "task/metric" keys, those worth a line: the headline metrics, never per-class ones
    ("segm/AP-circle")."""
    keys = [k for k in keys if "-" not in k.split("/", 1)[1]]
    return [k for k in keys if k.split("/", 1)[1] in _HEADLINE] or keys


def _panels(rows, eval_keys):
    keys = sorted({k for r in rows for k in r})
    losses = [k for k in keys if "loss" in k]
    tasks = {}
    for key in keys:
        if key in eval_keys and "/" in key:
            tasks.setdefault(key.split("/", 1)[0], []).append(key)
    panels = [("losses", losses, True), ("learning rate", ["lr"] if "lr" in keys else [], False)]
    panels += [(f"evaluation: {task}", _headline(names), False) for task, names in sorted(tasks.items())]
    return [p for p in panels if p[1]]


def plot_training_curves(metrics_json, output_png, eval_keys=None):
    """Draw ``output_png`` from ``metrics_json``: one panel of losses (log scale), one of the learning
    rate and one per evaluated task, three panels a row. ``eval_keys``: the "task/metric" keys that
    evaluation wrote (default: those of Detectron2's tasks bbox, segm, panoptic_seg, sem_seg, keypoints).
    Returns the path, or None when the file has nothing to plot yet."""
    if not os.path.isfile(metrics_json):
        return None
    metrics = read_metrics(metrics_json)
    if eval_keys is None:
        eval_keys = {k for r in metrics for k in r if k.split("/", 1)[0] in _EVALUATION_TASKS and "/" in k}
    panels = _panels(metrics, set(eval_keys))
    if not panels:
        return None
    # Figure + Agg canvas, not pyplot: no global state, no display needed, safe beside any backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    first, last = metrics[0]["iteration"], metrics[-1]["iteration"]  # every panel on the run's own axis
    columns = min(_COLUMNS, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(6.4 * columns, 4.2 * rows), dpi=100)
    FigureCanvasAgg(figure)
    for index, (title, keys, log_scale) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for key in keys:
            points = _series(metrics, key)
            marker = "o" if len(points) < 30 else None  # evaluations are few points: show each one
            axes.plot([p[0] for p in points], [p[1] for p in points], label=key, marker=marker, markersize=3)
        if log_scale and all(p[1] > 0 for key in keys for p in _series(metrics, key)):
            axes.set_yscale("log")
        axes.set_title(title)
        axes.set_xlim(first - 0.02 * (last - first + 1), last + 0.02 * (last - first + 1))
        axes.set_xlabel("iteration")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    tmp = output_png + ".tmp.png"
    figure.savefig(tmp)
    os.replace(tmp, output_png)  # a viewer never sees a half-written picture
    return output_png
