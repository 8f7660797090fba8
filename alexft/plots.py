"""Figures written into run folders."""
import re
import textwrap
import warnings

import numpy as np
# Figures built without pyplot need no backend, so drawing a file never changes the
# backend of the caller (a notebook's inline plots stay inline).
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .atomic import write_atomic
from .errors import WARNING_FILTERS, warn_user


def learning_curves(history, path):
    """Loss and accuracy per epoch, train and validation, side by side."""
    _save(curves_figure(history), path, dpi=100)
    return path


def curves_figure(history):
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for split, style in (("train", "o-"), ("val", "s--")):
        if any(row.get(f"{split}_loss") is not None for row in history):
            loss_axes.plot(epochs, [row.get(f"{split}_loss") for row in history], style, label=split)
            accuracy_axes.plot(epochs, [row.get(f"{split}_accuracy") for row in history], style, label=split)
    loss_axes.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    accuracy_axes.set(title="accuracy", xlabel="epoch", ylabel="top-1", ylim=(0, 1))
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.5 ticks
    return figure


def range_test_curve(result, path):
    """The learning-rate range test: loss against the base rate (log scale), raw and smoothed,
    with the edge and the chosen rate marked."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    axes.plot(result.rates, result.losses, ".", color="0.7", label="batch loss")
    axes.plot(result.rates, result.smoothed, "-", label="smoothed")
    axes.axvline(result.edge, color="tab:red", linestyle=":", label=f"edge: loss within 5% of its lowest ({result.edge:.2e})")
    axes.axvline(result.chosen, color="tab:green", linestyle="--", label=f"chosen base rate ({result.chosen:.2e})")
    axes.set_xscale("log")
    finite = [loss for loss in result.smoothed if np.isfinite(loss)]
    if finite:  # the exploding tail would flatten the useful part of the curve
        axes.set_ylim(min(result.losses) * 0.9, max(finite[0], min(finite)) * 2.5)
    axes.set(title="learning-rate range test", xlabel="base learning rate", ylabel="training loss")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    _save(figure, path, dpi=100)
    return path


def confusion_matrix(matrix, class_names, path, protocol=None):
    """Row-normalised confusion matrix (rows: true class) as a labelled heatmap.

    The figure grows with the class count so that 100 labels stay legible, and so that up to 20
    classes' cells hold their shares (each at least 0.45 inch: "0.48" at 9 points had run
    into its neighbours beside ImageNet's long names).
    """
    count = len(class_names)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    annotated = count <= 20
    side = min(max(6.0, 0.16 * count + 3, 0.45 * count + 3.5 if annotated else 0), 30.0)
    fontsize = max(4, min(10, 220 / max(count, 1)))
    figure = Figure(figsize=(side, side), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    labels = [short_label(name) for name in class_names]
    axes.set_xticks(range(count), labels, rotation=90, fontsize=fontsize)
    axes.set_yticks(range(count), labels, fontsize=fontsize)
    axes.set(xlabel="predicted", ylabel="true")
    # Over the whole figure: above the axes alone, beside long labels, it ran into the colour bar.
    figure.suptitle("confusion matrix" + (f", {protocol}" if protocol else "") + " (each true class's row sums to 1)")
    if annotated:
        for (row, column), value in np.ndenumerate(normalised):
            if value >= 0.005:
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=min(fontsize, 9),
                          color="white" if value > 0.5 else "black")
    figure.colorbar(image, ax=axes, shrink=0.8)
    _save(figure, path, dpi=100)
    return path


def short_label(name, width=24):
    """A class name short enough for a tick or a caption: ImageNet's synonyms ("great white
    shark, white shark, man-eater, ...") reduced to the first, then cut with an ellipsis."""
    if len(name) > width and "," in name:
        name = name.split(",")[0]
    return name if len(name) <= width else name[:width - 1] + "…"


def contact_sheet(image_paths, captions, path, columns=4):
    """Thumbnails in a grid with a caption under each (e.g. the worst-classified images)."""
    from .errors import ImageError
    from .preprocess import read_image

    rows = max(1, -(-len(image_paths) // columns))
    figure = Figure(figsize=(3 * columns, 3.4 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, image_path, caption in zip(grid.flat, image_paths, captions):
        try:
            axes.imshow(read_image(image_path)[:, :, ::-1])  # BGR -> RGB for display
        except ImageError:
            axes.text(0.5, 0.5, "unreadable", ha="center")
        axes.set_title(_wrapped(caption), fontsize=8)
    _save(figure, path, dpi=80)
    return path


def _wrapped(caption, width=44):
    """Each line of a caption folded to what a 3-inch cell holds at 8 points, so that a long one
    does not run over its neighbours' (they had, with ImageNet's names)."""
    return "\n".join(textwrap.fill(line, width) for line in caption.splitlines())


def _save(figure, path, dpi):
    missing = []
    # The filters and showwarning are the process's: changed in turn with the decoding threads
    # (errors.WARNING_FILTERS). Only the glyph warnings are taken; any other goes on to Python's
    # own handling, the user's filters and its once-per-place memory included.
    with WARNING_FILTERS, warnings.catch_warnings():
        warnings.filterwarnings("always", message=_MISSING_GLYPH.pattern, category=UserWarning)
        shown = warnings.showwarning

        def heard(message, category, filename, lineno, file=None, line=None):
            glyph = _MISSING_GLYPH.match(str(message))
            if glyph and issubclass(category, UserWarning):
                missing.append(chr(int(glyph[1])))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = heard
        write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=dpi))
    _say_missing_glyphs(missing)  # (outside the lock: warn_user takes it)


# Matplotlib's words (a UserWarning, with its own file and line) for a character its font lacks,
# drawn as a box: class names in Chinese, Japanese, ... with only DejaVu Sans installed.
_MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from (?:current )?font")
_GLYPHS_SAID = set()


def _say_missing_glyphs(characters):
    """One alexft warning per character never said before in this process, not two of
    matplotlib's (with its source line) per figure."""
    new = sorted(set(characters) - _GLYPHS_SAID)
    if new:
        _GLYPHS_SAID.update(new)
        warn_user(f"the figures draw {''.join(new)!r} of the class names as boxes: matplotlib's fonts here lack "
                  "those characters (install one that has them, e.g. Noto Sans CJK; the figures' numbers are unaffected)")
