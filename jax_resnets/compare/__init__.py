r"""Compare finished runs of one study: `python -m jax_resnets.compare DIR... --out=OUT`.

Each DIR is a workdir with results.json; the study that wrote it is detected from
results.json (its shape, or config.study): classification runs and transfer-grid cells,
hierarchy, faces or compression bias (CIE). Runs of different studies are a user error
(one line, exit status 2). One adapter per study (classification.py, hierarchy.py,
faces.py, cie.py) turns a workdir into table rows and curves; OUT gets
  report.md     the runs' headline metrics side by side (classification: accuracy, params,
                MACs, training FLOPs and time, img/s, accuracy per M trainable params;
                hierarchy: the all-heads comparison rows; faces: verification and dev
                accuracy; CIE: accuracy, precision, recall, F1, modal CIE per level), and for
                classification the settings ranked with 95% intervals (transfer.py: no
                winner inside the noise), the accuracy/compute trade-off, pretrained vs random;
  *.png         the curves each study has (accuracy/loss per epoch; CIE: metrics per level;
                classification: tradeoff.png);
  summary.json  the rows (and the classification settings' intervals).
Run names are the directory names.
"""
from jax_resnets.compare.report import ADAPTERS, main, study_of, write_report
from jax_resnets.compare.runs import CompareError, RunLog, detect_study, per_epoch, read_run, steps_per_epoch

__all__ = ["ADAPTERS", "CompareError", "RunLog", "detect_study", "main", "per_epoch", "read_run",
           "steps_per_epoch", "study_of", "write_report"]
