"""transformer.plotting: the attention heatmaps the notebooks draw."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from transformer.plotting import attention_grid, draw_attention  # noqa: E402


def test_one_map_is_drawn_as_given_with_the_tokens_on_the_axes():
  import matplotlib.pyplot as plt
  weights = np.array([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0]])
  fig, ax = plt.subplots()
  image = draw_attention(ax, weights, ["a", "b"], ["x", "y", "z"])
  np.testing.assert_array_equal(image.get_array(), weights)
  assert image.get_clim() == (0, 1)  # one scale for every map
  assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
  with pytest.raises(ValueError, match=r"shape \(2, 3\) do not match 3 row labels"):
    draw_attention(ax, weights, ["a", "b", "c"], ["x", "y", "z"])
  plt.close(fig)


def test_the_grid_has_a_panel_per_layer_and_head():
  import matplotlib.pyplot as plt
  weights = np.random.default_rng(0).dirichlet(np.ones(4), size=(2, 3, 4))  # [2, 3, 4, 4]
  fig = attention_grid(weights, list("abcd"), list("abcd"), title="t", xlabel="k", ylabel="q")
  panels = [ax for ax in fig.axes if ax.get_title().startswith("layer")]
  assert sorted(ax.get_title() for ax in panels) == sorted(
      f"layer {layer}, head {head}" for layer in range(2) for head in range(3))
  np.testing.assert_array_equal(
      next(ax for ax in panels if ax.get_title() == "layer 1, head 2").images[0].get_array(),
      weights[1, 2])
  with pytest.raises(ValueError, match="expected 4 axes"):
    attention_grid(weights[0], list("abcd"), list("abcd"), title="t", xlabel="k", ylabel="q")
  plt.close(fig)
