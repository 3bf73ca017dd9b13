"""Plain supervised classification (e.g. ResNet-34 on CIFAR-10): train, evaluate, report."""
import os

import jax
import ml_collections

from jax_resnets.training import loop


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  results = loop.train_and_evaluate(config, workdir)
  if jax.process_index() == 0:
    write_report(results, workdir)
  return results


def write_report(results: dict, workdir: str) -> None:
  cfg = results["config"]
  lines = [
      f"# {cfg['model']['name']}-{cfg['model']['depth']} on {cfg['dataset']['name']}"
      + (" (synthetic)" if cfg["dataset"]["synthetic"] else ""),
      "",
      "| metric | value |", "|---|---|",
      *[f"| {k} | {v:.4f} |" for k, v in sorted(results["final"].items())],
      f"| parameters | {results['num_params']:,} |",
      f"| steps | {results['steps']} |",
      f"| wall time this run (s) | {results['wall_time_s']:.1f} |",
  ]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
