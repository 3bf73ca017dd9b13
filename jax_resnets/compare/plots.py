"""Line plots of the curves adapters return, and the accuracy/compute scatter.

Each figure is one PNG with one panel per metric and one line per run (same colour for a
run in every panel); the run names go in a legend rather than on the points, so nothing
overlaps however close the runs are.
"""
import dataclasses
import os

import numpy as np


@dataclasses.dataclass
class Curve:
  figure: str        # file name, e.g. "accuracy.png"
  panel: str         # panel title
  label: str         # legend entry
  x: list            # numbers, or strings for a categorical axis (CIE levels)
  y: list
  xlabel: str = "epoch"
  ylabel: str = ""
  color_key: str = ""  # curves with the same key share a colour (one run)
  dashed: bool = False
  err: tuple | None = None  # (lo, hi) arrays: error bars


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def draw(curves: list[Curve], out: str) -> list[str]:
  """One PNG per distinct `figure`; returns their paths (figures without data are skipped)."""
  figures = {}
  for c in curves:
    if len(c.x):
      figures.setdefault(c.figure, []).append(c)
  colors = {k: i for i, k in enumerate(dict.fromkeys(c.color_key or c.label for c in curves))}
  return [_draw_figure(name, cs, colors, out) for name, cs in figures.items()]


def _draw_figure(name: str, curves: list[Curve], colors: dict, out: str) -> str:
  plt = _pyplot()
  panels = list(dict.fromkeys(c.panel for c in curves))
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 2, 4.5), squeeze=False)
  for c in curves:
    ax = axes[0][panels.index(c.panel)]
    style = dict(marker="o", markersize=3, linestyle="--" if c.dashed else "-", label=c.label,
                 color=plt.cm.tab10(colors[c.color_key or c.label] % 10))
    if c.err is not None:
      y = np.asarray(c.y, float)
      yerr = np.abs(np.stack([y - np.asarray(c.err[0], float), np.asarray(c.err[1], float) - y]))
      ax.errorbar(c.x, y, yerr=yerr, capsize=3, **style)
    else:
      ax.plot(c.x, c.y, **style)
    ax.set(title=c.panel, xlabel=c.xlabel, ylabel=c.ylabel)
  for ax in axes[0]:
    ax.grid(alpha=0.3)
    ax.tick_params(axis="x", labelrotation=30 if isinstance(curves[0].x[0], str) else 0)
  handles, labels = axes[0][-1].get_legend_handles_labels()
  fig.legend(*_unique(handles, labels), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
  fig.tight_layout()
  path = os.path.join(out, name)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return path


def _unique(handles, labels):
  seen = dict(zip(labels, handles))
  return list(seen.values()), list(seen)


def tradeoff(points: list[dict], xlabel: str, out: str) -> str:
  """tradeoff.png: accuracy (with its interval) vs compute, one legend entry per setting.

  `points`: {'label', 'x', 'y', 'lo', 'hi', 'filled'}; distinct colour + marker per point
  and a legend outside the axes instead of text next to each point (which overlapped).
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8.5, 4.5))
  markers = "osD^vP*Xh<>p"
  for i, p in enumerate(points):
    color = plt.cm.tab10(i % 10)
    yerr = None if p.get("lo") is None else [[100 * (p["y"] - p["lo"])], [100 * (p["hi"] - p["y"])]]
    ax.errorbar([p["x"]], [100 * p["y"]], yerr=yerr, fmt=markers[i % len(markers)], color=color,
                markerfacecolor=color if p.get("filled", True) else "none", capsize=3, label=p["label"])
  ax.set(xlabel=xlabel, ylabel="accuracy (%)", title="accuracy vs compute (filled: pretrained)")
  ax.grid(alpha=0.3)
  ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
  fig.tight_layout()
  path = os.path.join(out, "tradeoff.png")
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return path
