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


def _headline(key):
    """Evaluation keys worth a line: "task/metric" without a per-class suffix ("segm/AP-circle")."""
    return "/" in key and "-" not in key.split("/", 1)[1]


def _panels(rows, eval_keys):
    keys = sorted({k for r in rows for k in r})
    losses = [k for k in keys if "loss" in k]
    tasks = {}
    for key in keys:
        if key in eval_keys and _headline(key):
            tasks.setdefault(key.split("/", 1)[0], []).append(key)
    panels = [("losses", losses, True), ("learning rate", ["lr"] if "lr" in keys else [], False)]
    panels += [(f"evaluation: {task}", names, False) for task, names in sorted(tasks.items())]
    return [p for p in panels if p[1]]


def plot_training_curves(metrics_json, output_png, eval_keys=()):
    """Draw ``output_png`` from ``metrics_json``: one panel of losses (log scale), one of the learning
    rate and one per evaluated task (``eval_keys``: the "task/metric" keys that evaluation wrote).
    Returns the path, or None when the file has nothing to plot yet."""
    if not os.path.isfile(metrics_json):
        return None
    rows = read_metrics(metrics_json)
    panels = _panels(rows, set(eval_keys))
    if not panels:
        return None
    # Figure + Agg canvas, not pyplot: no global state, no display needed, safe beside any backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4 * len(panels), 4.2), dpi=100)
    FigureCanvasAgg(figure)
    for index, (title, keys, log_scale) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for key in keys:
            points = _series(rows, key)
            marker = "o" if len(points) < 30 else None  # evaluations are few points: show each one
            axes.plot([p[0] for p in points], [p[1] for p in points], label=key, marker=marker, markersize=3)
        if log_scale and all(p[1] > 0 for key in keys for p in _series(rows, key)):
            axes.set_yscale("log")
        axes.set_title(title)
        axes.set_xlabel("iteration")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    tmp = output_png + ".tmp.png"
    figure.savefig(tmp)
    os.replace(tmp, output_png)  # a viewer never sees a half-written picture
    return output_png
