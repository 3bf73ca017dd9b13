"""Number formatting and markdown tables shared by the study adapters."""
import math

from jax_resnets.compare.runs import number


def fmt(v, spec: str = ".2f", scale: float | None = None) -> str:
  """`spec` "sig" = 4 significant digits without exponent (0.1824, 11,448); n/a for missing."""
  v = number(v)
  if v is None:
    return "n/a"
  v = v if scale is None else v * scale
  if spec == "sig":
    spec = f",.{max(0, 3 - math.floor(math.log10(abs(v))))}f" if v else ".0f"
  return format(v, spec)


def pct(v) -> str:
  return fmt(v, ".2f", 100)


def with_interval(v, ci, scale: float = 100, spec: str = ".2f") -> str:
  """'91.20 [90.10, 92.30]' when an interval is known, else just the value."""
  text = fmt(v, spec, scale)
  if ci is None or text == "n/a":
    return text
  return f"{text} [{fmt(ci[0], spec, scale)}, {fmt(ci[1], spec, scale)}]"


def table(columns, rows: list[dict]) -> list[str]:
  """`columns`: (header, function of a row -> str) pairs."""
  lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(f(r) for _, f in columns) + " |" for r in rows]
  return lines


def col(key: str, spec: str = ".2f", scale: float | None = None):
  """A column function formatting row[key]; strings pass through."""
  def get(row):
    v = row.get(key)
    return v if isinstance(v, str) else fmt(v, spec, scale)
  return get
