r"""Parameters and FLOPs of a model variant, from XLA's cost analysis of the compiled forward.

  python -m jax_resnets.evaluation.flops --depth=152 --num_classes=10 --image_size=32 \
      --disabled_skips=layer3.0,layer4.1

prints a table of the model with all skips and with the named skips disabled. FLOPs are
XLA's count for one image's inference forward pass (`jax.jit(f).lower(...).compile()
.cost_analysis()["flops"]`: convs and matmuls as 2 x multiply-adds, plus the elementwise
ops of BN, ReLU, the residual adds and pooling); MACs are FLOPs / 2, the convention of
papers' "FLOPs" tables. Nothing is materialised: params come from `jax.eval_shape`.
"""
import argparse
import functools

import jax
import jax.numpy as jnp
import ml_collections

from jax_resnets.models import registry


def cost_analysis(compiled) -> dict:
  """`Compiled.cost_analysis()` as one dict (older jax returned a list of one)."""
  out = compiled.cost_analysis()
  return out[0] if isinstance(out, (list, tuple)) else out


def analyze(model, image_shape: tuple[int, int, int], batch: int = 1) -> dict:
  """{"params", "flops", "macs"} per image of `model`'s eval-mode forward pass."""
  x = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  forward = lambda v, x: model.apply(v, x, train=False)[0]
  flops = float(cost_analysis(jax.jit(forward).lower(variables, x).compile())["flops"]) / batch
  params = sum(int(p.size) for p in jax.tree.leaves(variables["params"]))
  return {"params": params, "flops": flops, "macs": flops / 2}


@functools.lru_cache(maxsize=32)
def _analyze_cached(model_json: str, num_classes: int, image_size: int) -> tuple:
  import json  # pylint: disable=g-import-not-at-top
  model_cfg = ml_collections.ConfigDict(json.loads(model_json))
  out = analyze(registry.build_model(model_cfg, num_classes), (image_size, image_size, 3))
  return tuple(sorted(out.items()))


def analyze_config(model_cfg, num_classes: int, image_size: int) -> dict:
  """`analyze` for a `config.model` (a ConfigDict or its dict); cached per variant."""
  import json  # pylint: disable=g-import-not-at-top
  cfg = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
  cfg["disabled_skips"] = list(cfg.get("disabled_skips") or ())
  return dict(_analyze_cached(json.dumps(cfg, sort_keys=True), num_classes, image_size))


def variants_table(model_cfg, num_classes: int, image_size: int, disabled_skips) -> str:
  """Markdown: the model with all skips vs with `disabled_skips` removed."""
  base_cfg = dict(model_cfg, disabled_skips=[])
  rows = [("all skips", analyze_config(base_cfg, num_classes, image_size)),
          ("disabled: " + ", ".join(disabled_skips),
           analyze_config(dict(model_cfg, disabled_skips=list(disabled_skips)), num_classes, image_size))]
  base = rows[0][1]
  lines = ["| variant | params | MACs | FLOPs (XLA) | params vs all | FLOPs vs all |", "|---|---|---|---|---|---|"]
  for name, r in rows:
    lines.append(f"| {name} | {r['params']:,} | {r['macs'] / 1e6:,.2f} M | {r['flops'] / 1e6:,.2f} M | "
                 f"{r['params'] - base['params']:+,} | {100 * (r['flops'] / base['flops'] - 1):+.3f}% |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--depth", type=int, default=152)
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--stem", default="imagenet", choices=("imagenet", "cifar"))
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--disabled_skips", default="layer3.0,layer4.1")
  a = parser.parse_args()
  model_cfg = dict(name="resnet", depth=a.depth, stem=a.stem, width=a.width, dtype="float32")
  print(f"ResNet-{a.depth} ({a.stem} stem, width {a.width}), {a.num_classes} classes, "
        f"{a.image_size}x{a.image_size} input, per image:")
  print(variants_table(model_cfg, a.num_classes, a.image_size, [s for s in a.disabled_skips.split(",") if s]))


if __name__ == "__main__":
  main()
