"""Attention heatmaps for the notebooks: one map on an Axes, or every layer x head in one figure.

A map is a head's weights [queries, keys] (each row a query's distribution over the keys, §3.2.1),
drawn with the tokens on the axes and one fixed colour scale (0 to 1), so maps compare directly.
The weights come from `model.apply(..., mutable=["intermediates"])` (docs/model.md).

matplotlib is an optional dependency (the `notebooks` and `test` extras): it is imported inside
the functions, so importing this module never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COLORMAP = "viridis"


def draw_attention(ax, weights, rows: Sequence[str], cols: Sequence[str], *, labels: bool = True,
                   fontsize: float = 7):
  """Draws one head's weights [queries, keys] on `ax` (viridis, 0 to 1) and returns the image
  (for a colorbar).

  Args:
    ax: a matplotlib Axes.
    weights: array-like [len(rows), len(cols)].
    rows: the query tokens (y axis, top to bottom).
    cols: the key tokens (x axis, left to right; written vertically).
    labels: whether to write the tokens as tick labels (else matplotlib's numeric ticks).
    fontsize: of the tick labels.
  """
  weights = np.asarray(weights)
  if weights.shape != (len(rows), len(cols)):
    raise ValueError(f"weights of shape {weights.shape} do not match {len(rows)} row labels and "
                     f"{len(cols)} column labels; expected ({len(rows)}, {len(cols)}).")
  image = ax.imshow(weights, cmap=COLORMAP, vmin=0, vmax=1, aspect="auto")
  if labels:
    ax.set_yticks(range(len(rows)), rows, fontsize=fontsize)
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=fontsize)
  return image


def attention_grid(weights_by_layer_head, rows: Sequence[str], cols: Sequence[str], *,
                   title: str, xlabel: str, ylabel: str, fontsize: float = 7,
                   panel_size: tuple[float, float] = (3.3, 3.4)):
  """One figure of every head's map: rows = layers, columns = heads, one colorbar; returns it.

  Args:
    weights_by_layer_head: array-like [layers, heads, len(rows), len(cols)].
    rows, cols: the query and key tokens, shared by every panel.
    title: the figure's title.
    xlabel, ylabel: what the keys and the queries are (on the bottom row and the first column).
    fontsize: of the tick labels.
    panel_size: (width, height) in inches of one panel.
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  weights = np.asarray(weights_by_layer_head)
  if weights.ndim != 4:
    raise ValueError(f"weights_by_layer_head has shape {weights.shape}; expected 4 axes "
                     "[layers, heads, queries, keys].")
  layers, heads = weights.shape[:2]
  width, height = panel_size
  fig, axes = plt.subplots(layers, heads, figsize=(width * heads + 1, height * layers + 0.6),
                           layout="constrained", squeeze=False)
  for layer in range(layers):
    for head in range(heads):
      ax = axes[layer, head]
      image = draw_attention(ax, weights[layer, head], rows, cols, fontsize=fontsize)
      ax.set_title(f"layer {layer}, head {head}")
      if layer == layers - 1:
        ax.set_xlabel(xlabel)
      if head == 0:
        ax.set_ylabel(ylabel)
  fig.colorbar(image, ax=axes, shrink=0.7, label="attention weight")
  fig.suptitle(title, fontsize=12)
  return fig
