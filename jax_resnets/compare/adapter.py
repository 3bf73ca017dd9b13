"""What a study adapter gives the report: table rows, curves, and optional extra sections.

One adapter per study kind keeps each study's results.json layout in one small module;
the report (report.py) only tabulates rows side by side and draws curves.
"""
import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Options:
  tolerance: float = 1.0   # accuracy points: the compute trade-off pick when there is no interval
  with_macs: bool = True   # XLA cost analysis of each classification model (builds it)


@dataclasses.dataclass
class Section:
  lines: list
  plots: list = dataclasses.field(default_factory=list)
  summary: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Adapter:
  study: str
  title: str                # what the runs are, for the report's heading
  columns: tuple            # (header, row -> str)
  rows: Callable            # (RunLog, Options) -> list[dict], each with at least 'run'
  curves: Callable          # RunLog -> list[plots.Curve]
  note: str = ""            # how to read the table
  sections: Callable | None = None  # (rows, runs, out, Options) -> Section
