"""`jax_resnets.compare` on tiny fake workdirs of every study, in the layout each study writes.

The fakes copy the writers: results.json as training/loop.py `finish`, hierarchy's
`write_report`, faces' `run` and celeba_cie's `run` write it, and TensorBoard events written
with tensorboardX's SummaryWriter as training/summary.py does. No training runs here.
"""
import copy
import json
import os
import subprocess
import sys

import pytest
from tensorboardX import SummaryWriter

from jax_resnets import compare, config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = config_lib.base_config().to_dict()
PNG = b"\x89PNG\r\n\x1a\n"


def write_events(workdir: str, scalars: dict) -> None:
  """{tag: [(step, value)]} as training/summary.py writes them."""
  writer = SummaryWriter(logdir=workdir)
  for tag, points in scalars.items():
    for step, value in points:
      writer.add_scalar(tag, float(value), step)
  writer.close()


def write_results(workdir: str, results: dict) -> str:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2, default=str)
  return workdir


def curve_events(accuracy: float, steps_per_epoch: int = 4, epochs: int = 2) -> dict:
  """The loop's tags: train/* every 2 steps, eval/* at each epoch end."""
  train = range(2, steps_per_epoch * epochs + 1, 2)
  evals = range(steps_per_epoch, steps_per_epoch * epochs + 1, steps_per_epoch)
  return {"train/loss": [(s, 2.0 / s) for s in train], "train/accuracy": [(s, accuracy * s / 8) for s in train],
          "train/img_per_sec": [(s, 100.0) for s in train], "eval/loss": [(s, 1.0 / s) for s in evals],
          "eval/accuracy": [(s, accuracy) for s in evals]}


def classification_run(root, name: str, accuracy: float, seed: int = 0, init: bool = False, freeze: str = "full",
                       lr: float = 0.1, extra: dict | None = None) -> str:
  """A workdir as training/loop.py `finish` leaves it (2 epochs of 4 steps)."""
  config = copy.deepcopy(BASE_CONFIG)
  config.update(seed=seed, freeze=freeze, num_epochs=2)
  config["optim"]["learning_rate"] = lr
  config["init"]["checkpoint"] = f"{root}/weights.safetensors" if init else None
  trainable = {"head_only": 5_130, "final_block": 8_400_000}.get(freeze, 11_200_000)
  results = {"final": {"eval/accuracy": accuracy, "eval/loss": 1.5, "train/loss": 1.2, "train/accuracy": accuracy},
             "steps": 8, "steps_this_run": 8, "wall_time_s": 12.5, "steps_per_sec": 0.64,
             "num_params": 11_200_000, "trainable_params": trainable, "config": config, **(extra or {})}
  workdir = write_results(os.path.join(str(root), name), results)
  write_events(workdir, curve_events(accuracy))
  return workdir


def read_report(out) -> tuple[str, dict]:
  with open(os.path.join(out, "report.md")) as f:
    report = f.read()
  with open(os.path.join(out, "summary.json")) as f:
    return report, json.load(f)


def assert_pngs(out, *names) -> None:
  for name in names:
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(8) == PNG, name


def table_row(report: str, *cells: str) -> str:
  """The one markdown table line that starts with these cells."""
  lines = [l for l in report.splitlines() if l.startswith("| " + " | ".join(cells) + " |")]
  assert len(lines) == 1, (cells, lines)
  return lines[0]


def run_cli(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "jax_resnets.compare", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=False)


# ------------------------------------------------------------------------------ classification


def test_classification_table_curves_and_no_winner_without_interval(tmp_path):
  a = classification_run(tmp_path, "r34_a", 0.61)
  b = classification_run(tmp_path, "r34_b", 0.55, lr=0.01,
                         extra={"train_time_s": 7.25, "train_flops": 3.5e12})
  out = str(tmp_path / "out")
  compare.write_report([a, b], out, with_macs=False)
  report, summary = read_report(out)
  assert summary["study"] == "classification" and [r["run"] for r in summary["rows"]] == ["r34_a", "r34_b"]
  row_a, row_b = table_row(report, "r34_a", "random", "full"), table_row(report, "r34_b", "random", "full")
  assert "| 61.00 |" in row_a and "| n/a | 12.5* |" in row_a  # No FLOPs; wall time incl. compilation.
  assert "| 3.5e+12 | 7.2 |" in row_b or "| 3.5e+12 | 7.3 |" in row_b
  assert "No winner named" in report and "Most accurate" not in report
  assert_pngs(out, "accuracy.png", "loss.png", "tradeoff.png")
  x, y = compare.per_epoch(compare.read_run(a), "train/loss")
  assert list(x) == [1.0, 2.0] and len(y) == 2


def test_seeds_are_grouped_and_a_clear_difference_names_the_winner(tmp_path):
  dirs = [classification_run(tmp_path, f"lr01_seed{s}", 0.80 + 0.01 * s, seed=s) for s in range(3)]
  dirs += [classification_run(tmp_path, f"lr001_seed{s}", 0.50 + 0.01 * s, seed=s, lr=0.01) for s in range(3)]
  out = str(tmp_path / "out")
  compare.write_report(dirs, out, with_macs=False)
  report, summary = read_report(out)
  settings = {s["setting"]: s for s in summary["settings"]}
  assert set(settings) == {"lr01 (3 seeds)", "lr001 (3 seeds)"}
  lo, hi = settings["lr01 (3 seeds)"]["accuracy_interval"]
  assert lo < 0.81 < hi and hi - lo < 0.1
  diff = settings["lr001 (3 seeds)"]["difference_to_top"]
  assert diff["method"].startswith("seeds") and diff["verdict"] == "a" and diff["interval"][0] > 0
  assert "Most accurate setting: **lr01 (3 seeds)**" in report


def test_overlapping_seeds_are_a_tie(tmp_path):
  dirs = [classification_run(tmp_path, f"a_seed{s}", acc, seed=s) for s, acc in enumerate((0.60, 0.70, 0.65))]
  dirs += [classification_run(tmp_path, f"b_seed{s}", acc, seed=s, lr=0.01) for s, acc in enumerate((0.66, 0.64, 0.62))]
  out = str(tmp_path / "out")
  compare.write_report(dirs, out, with_macs=False)
  report, summary = read_report(out)
  assert "**Tie** between all 2 settings" in report and "Most accurate" not in report
  assert [s["difference_to_top"]["verdict"] for s in summary["settings"] if s["difference_to_top"]] == ["tie"]


def write_predictions(workdir: str, correct: list[bool]) -> None:
  """predictions_test.csv as `python -m jax_resnets.evaluate` writes it."""
  with open(os.path.join(workdir, "predictions_test.csv"), "w") as f:
    f.write("id,label,prediction,confidence\n")
    for i, ok in enumerate(correct):
      f.write(f"{i},1,{1 if ok else 0},0.900000\n")


@pytest.mark.parametrize("gap, verdict", [(150, "a"), (3, "tie")])
def test_bootstrap_over_test_examples_without_seeds(tmp_path, gap, verdict):
  n = 400
  a = classification_run(tmp_path, "a", (200 + gap) / n)
  b = classification_run(tmp_path, "b", 200 / n, lr=0.01)
  write_predictions(a, [i < 200 + gap for i in range(n)])
  write_predictions(b, [i < 200 for i in range(n)])
  out = str(tmp_path / "out")
  compare.write_report([a, b], out, with_macs=False)
  report, summary = read_report(out)
  diff = summary["settings"][1]["difference_to_top"]
  assert diff["method"] == f"bootstrap over {n} test examples" and diff["verdict"] == verdict
  assert ("Most accurate setting: **a**" in report) == (verdict == "a")


def transfer_grid(root, accuracy) -> list[str]:
  return [classification_run(root, f"{init}_{freeze}", accuracy(init, freeze), init=init == "pretrained",
                             freeze=freeze, lr=1e-4 if freeze == "full" else 1e-3)
          for init in ("pretrained", "random") for freeze in ("head_only", "final_block", "full")]


def test_transfer_grid_with_equal_cells_is_a_tie(tmp_path):
  out = str(tmp_path / "out")
  compare.write_report(transfer_grid(tmp_path, lambda i, f: 0.0), out, with_macs=False)
  report, _ = read_report(out)
  for section in ("## Best accuracy/compute trade-off", "## Pretrained vs random",
                  "## Which fine-tuning depth transfers best"):
    assert section in report
  assert "**Tie** between all 6 settings" in report
  assert "Most accurate" not in report and "largest gain" not in report.lower() and "+0.00 points" not in report
  assert table_row(report, "head_only", "-", "0.00", "0.00", "+0.00", "n/a").endswith("| tie |")
  assert "tie: head_only, final_block, full" in report
  assert "Most accuracy per trainable parameter (pretrained): tie between head_only, final_block, full" in report
  assert_pngs(out, "tradeoff.png", "accuracy.png", "loss.png")


def test_transfer_grid_without_interval_names_no_winner(tmp_path):
  out = str(tmp_path / "out")
  accuracy = {"head_only": 0.3, "final_block": 0.4, "full": 0.5}
  compare.write_report(transfer_grid(tmp_path, lambda i, f: accuracy[f] + (0.1 if i == "pretrained" else 0)), out,
                       with_macs=False)
  report, _ = read_report(out)
  assert "No winner named" in report and "Most accurate" not in report
  assert table_row(report, "full", "-", "60.00", "50.00", "+10.00", "n/a").endswith("| no interval |")


# ----------------------------------------------------------------------------------- hierarchy


def hierarchy_metrics(top1: float) -> dict:
  """studies/hierarchy/metrics.py `metrics` output."""
  return {"fine_top1": top1, "fine_top5": min(1.0, top1 + 0.2), "parent_accuracy": top1 + 0.1,
          "child_accuracy_mean": top1 + 0.05, "child_accuracy_per_parent": {"0": top1, "1": top1 + 0.1},
          "fine_errors": 7, "errors_within_parent": 0.25}


def hierarchy_run(root, name: str, top1: float) -> str:
  """A `hierarchy.stage=all` workdir: results.json by write_report, events in stage1..3."""
  stages = {}
  for i, (stage, routings) in enumerate((("stage1", ("flat",)), ("stage2", ("hard", "soft")),
                                         ("stage3", ("hard", "soft")))):
    stages[stage] = {"stage": stage, "head": "original" if i == 0 else "hierarchy", "steps": 8,
                     "metrics": {r: hierarchy_metrics(top1 + 0.01 * i) for r in routings}, "num_params": 1000,
                     "head_params": 100, "final": {"eval/accuracy": top1}}
    write_events(os.path.join(str(root), name, stage), curve_events(top1))
  labels = (("stage1", "flat", "flat"), ("stage2", "hard", "hierarchy, parent only, hard"),
            ("stage3", "hard", "hierarchy, hard routing"), ("stage3", "soft", "hierarchy, soft routing"))
  comparison = {label: stages[s]["metrics"][r] for s, r, label in labels}
  return write_results(os.path.join(str(root), name), {"stages": stages, "comparison": comparison})


def test_hierarchy_rows_and_curves(tmp_path):
  runs = [hierarchy_run(tmp_path, "phinet", 0.40), hierarchy_run(tmp_path, "resnet", 0.50)]
  out = str(tmp_path / "out")
  compare.write_report(runs, out)
  report, summary = read_report(out)
  assert summary["study"] == "hierarchy" and len(summary["rows"]) == 8
  assert table_row(report, "phinet", "flat", "40.00", "60.00", "50.00", "45.00", "25.00").endswith("| 8 |")
  assert table_row(report, "resnet", "hierarchy, soft routing", "52.00")
  assert "tradeoff.png" not in report
  assert_pngs(out, "hierarchy.png")


# --------------------------------------------------------------------------------------- faces


def faces_run(root, name: str, verification: float, dev) -> str:
  """results.json as studies/faces/study.py `run` writes it (numpy scalars become strings)."""
  config = copy.deepcopy(BASE_CONFIG)
  config.update(study="faces", loss="arcface", faces={"task": "both"}, num_epochs=2)
  final = {"dev/accuracy": dev, "test/accuracy_if_labelled": float("nan"), "test/num_images": 12,
           "verification/accuracy": verification, "verification/threshold": "0.4321",
           "verification/accuracy_in_sample": str(verification + 0.05), "verification/no_match_fraction": 0.5}
  results = {"final": final, "chance": {"dev/accuracy": 0.1, "verification/accuracy": 0.5},
             "stopping_metric": "dev/accuracy", "best_step": 8, "stopped_at": None, "steps_run": 8,
             "total_steps": 8, "wall_time_s": 3.0, "files": ["report.md", "results.json"], "num_params": 5000,
             "config": config}
  workdir = write_results(os.path.join(str(root), name), results)
  write_events(workdir, {"dev/accuracy": [(4, 0.2), (8, 0.3)], "verification/accuracy": [(4, 0.55), (8, 0.6)],
                         "train/loss": [(2, 3.0), (4, 2.0), (6, 1.5), (8, 1.0)]})
  return workdir


def test_faces_rows_with_non_float_values(tmp_path):
  runs = [faces_run(tmp_path, "arcface", 0.75, 0.3), faces_run(tmp_path, "softmax", 0.65, "0.25")]
  out = str(tmp_path / "out")
  compare.write_report(runs, out)
  report, summary = read_report(out)
  assert summary["study"] == "faces"
  assert table_row(report, "arcface", "both", "arcface", "75.00 (chance 50.00)", "80.00", "30.00 (chance 10.00)")
  assert table_row(report, "softmax", "both", "arcface", "65.00 (chance 50.00)", "70.00", "25.00 (chance 10.00)")
  assert_pngs(out, "faces.png")


# ----------------------------------------------------------------------------------------- CIE


def cie_entry(accuracy: float, count: int | None, with_ci: bool) -> dict:
  """One level of celeba_cie's `analyse` (+ bootstrap intervals when `with_ci`)."""
  overall = {"count": 100, "positives": 20}
  for i, m in enumerate(("accuracy", "precision", "recall", "f1", "error", "fpr", "fnr")):
    overall[m], overall[m + "_std"] = accuracy - 0.1 * i, 0.01
    if with_ci:
      overall[m + "_ci"] = [accuracy - 0.1 * i - 0.02, accuracy - 0.1 * i + 0.02]
  entry = {"num_models": 3, "all": overall, "subgroups": {}, "change_vs_baseline": {"all": {}, "subgroups": {}}}
  if count is not None:
    entry["cie"] = {"modal": {"count": count, "fraction": count / 100, "ids": list(range(count)), "over_index": {}},
                    "taxicab": {"count": 10, "fraction": 0.1, "ids": [], "over_index": {}}}
    if with_ci:
      entry["cie"]["modal"]["count_ci"] = [count - 2, count + 3]
  return entry


def cie_run(root, name: str, with_ci: bool) -> str:
  config = copy.deepcopy(BASE_CONFIG)
  config.update(study="celeba_cie", cie={"sparsities": [0.5, 0.9], "quantization": ["int8"]})
  levels = {"baseline": {"kind": "baseline", "sparsity": 0.0, "method": None},
            "prune_0.5": {"kind": "pruning", "sparsity": 0.5, "method": None, "achieved_sparsity": 0.5},
            "prune_0.9": {"kind": "pruning", "sparsity": 0.9, "method": None, "achieved_sparsity": 0.9},
            "int8": {"kind": "quantization", "sparsity": None, "method": "int8"}}
  analysis = {"baseline": cie_entry(0.95, None, with_ci), "prune_0.5": cie_entry(0.94, 4, with_ci),
              "prune_0.9": cie_entry(0.90, 12, with_ci), "int8": cie_entry(0.93, 6, with_ci)}
  results = {"analysis": analysis, "levels": levels, "top_fraction": 0.1, "total_steps": 8, "num_test": 100,
             "grid_level": "prune_0.9", "model": "resnet-18 width 8", "num_params": 1000, "trainable_params": 1000,
             "config": config, "timing": {"total (s)": 5.0}}
  workdir = write_results(os.path.join(str(root), name), results)
  write_events(os.path.join(workdir, "tensorboard", "baseline", "seed_0"), {"train/loss": [(2, 1.0)]})
  return workdir


def test_cie_levels_with_and_without_intervals(tmp_path):
  runs = [cie_run(tmp_path, "with_ci", True), cie_run(tmp_path, "plain", False)]
  out = str(tmp_path / "out")
  compare.write_report(runs, out)
  report, summary = read_report(out)
  assert summary["study"] == "celeba_cie" and len(summary["rows"]) == 8
  row = table_row(report, "with_ci", "prune_0.9", "3", "0.900")
  assert "| 90.00 [88.00, 92.00] | 80.00 [78.00, 82.00] |" in row and "| 12 [10, 15] | 12.00 |" in row
  row = table_row(report, "plain", "prune_0.9", "3", "0.900")
  assert "| 90.00 ± 1.00 | 80.00 ± 1.00 | 70.00 ± 1.00 | 60.00 ± 1.00 | 12 | 12.00 |" in row
  assert table_row(report, "plain", "baseline", "3", "0.000").endswith("| - | n/a |")
  assert_pngs(out, "cie.png")


# --------------------------------------------------------------------------- detection and CLI


def test_detects_each_study(tmp_path):
  kinds = {"classification": classification_run(tmp_path, "c", 0.5), "hierarchy": hierarchy_run(tmp_path, "h", 0.4),
           "faces": faces_run(tmp_path, "f", 0.7, 0.3), "celeba_cie": cie_run(tmp_path, "k", False)}
  for kind, workdir in kinds.items():
    assert compare.detect_study(compare.read_run(workdir).results) == kind


def test_mixed_studies_fail_with_one_line(tmp_path):
  proc = run_cli(classification_run(tmp_path, "c", 0.5), cie_run(tmp_path, "k", False), "--out", tmp_path / "out",
                 "--no_macs")
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: runs of different studies") and "Traceback" not in proc.stderr
  assert "classification: c" in lines[0] and "celeba_cie: k" in lines[0]
  assert not os.path.exists(tmp_path / "out" / "report.md")


def test_cli_missing_or_unknown_results_fail_with_one_line(tmp_path):
  proc = run_cli(tmp_path / "nothing", "--out", tmp_path / "out")
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "has not finished" in proc.stderr
  odd = write_results(str(tmp_path / "odd"), {"something": 1})
  proc = run_cli(odd, "--out", tmp_path / "out")
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "cannot tell which study" in proc.stderr


def test_cli_writes_report(tmp_path):
  proc = run_cli(cie_run(tmp_path, "k", True), "--out", tmp_path / "out")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == str(tmp_path / "out" / "report.md")
