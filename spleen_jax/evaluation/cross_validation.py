"""Aggregates the validation reports of cross-validation folds.

Each fold `k` is a run in `ROOT/fold_<k>` trained with `data.num_folds` and
`data.fold=k`, and evaluated on its validation split, so every subject outside
the test split is scored by exactly one fold. The pooled statistics treat the
frames of all folds as one set.

NOTE: early stopping and the best checkpoint of each fold are chosen on that
fold's validation split, so these out-of-fold scores are optimistic. Only a
held-out test split gives an unbiased estimate.
"""

import csv
import json
import math
import pathlib
from typing import Any

import numpy as np

from spleen_jax.evaluation import report as report_lib

REPORT_JSON = "cv_report.json"
REPORT_MARKDOWN = "cv_report.md"
_COUNT_FIELDS = ("class_id", "true_positive", "false_positive",
                 "false_negative", "true_negative", "area_truth",
                 "area_prediction")


def fold_dir(root: pathlib.Path, fold: int) -> pathlib.Path:
  return root / f"fold_{fold}"


def _read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
  rows = []
  with open(path, newline="") as file:
    for row in csv.DictReader(file):
      for key, value in row.items():
        if key in _COUNT_FIELDS:
          row[key] = int(value)
        elif key not in ("file_name", "subject", "class"):
          row[key] = float(value)
      rows.append(row)
  return rows


def _fold_report(directory: pathlib.Path, fold: int,
                 target: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Reads one fold's validation report; returns its entry and target rows."""
  eval_dir = directory / "eval" / "validation"
  paths = [eval_dir / name for name in
           ("summary.json", "metrics.json", "per_image.csv")]
  for path in paths:
    if not path.is_file():
      raise FileNotFoundError(
          f"{path} not found: fold {fold} has no validation report. Run "
          "launch/cross_validate.py again to train and evaluate it.")
  summary = json.loads(paths[0].read_text())
  metrics = json.loads(paths[1].read_text())
  rows = [r for r in _read_rows(paths[2]) if r["class"] == target]
  variant = summary["variants"]["configured"]
  entry = {
      "fold": fold,
      "workdir": str(directory),
      "validation_subjects": summary["subjects"],
      "step": summary["step"],
      "frames": len(rows),
      "frames_with_class": summary["classes"][target]["frames_with_class"],
      "dice_mean": variant["dice_mean"],
      "dice_mean_with_class": variant["dice_mean_with_class"],
      "hd95_mean": variant["hd95_mean"],
      "hd95_missing": variant["hd95_missing"],
      "pooled_dice": variant["pooled_dice"],
      "letterboxed_pooled_dice": metrics["metrics"].get(f"dice_{target}"),
  }
  return entry, rows


def aggregate(root: str | pathlib.Path, num_folds: int,
              target: str | None = None, *, bootstrap_samples: int = 1000,
              seed: int = 0) -> dict[str, Any]:
  """Builds the cross-validation report from the folds' validation reports.

  Args:
    root: the folder of the `fold_<k>` runs.
    num_folds: the number of folds.
    target: the class to report; None takes the target class of fold 0's
      summary.json.
    bootstrap_samples, seed: the bootstrap of the pooled statistics.

  Returns:
    `folds` (one entry per fold), `fold_dice_mean` (mean and sample standard
    deviation of the folds' mean Dice) and `pooled` (statistics over the
    frames of all folds, as in summary.json).

  Raises:
    FileNotFoundError: a fold has no validation report.
  """
  root = pathlib.Path(root)
  if target is None:
    summary_path = fold_dir(root, 0) / "eval" / "validation" / "summary.json"
    if not summary_path.is_file():
      raise FileNotFoundError(
          f"{summary_path} not found: fold 0 has no validation report. Run "
          "launch/cross_validate.py again to train and evaluate it.")
    target = json.loads(summary_path.read_text())["target_class"]
  folds, pooled_rows = [], []
  for fold in range(num_folds):
    entry, rows = _fold_report(fold_dir(root, fold), fold, target)
    folds.append(entry)
    pooled_rows.extend(rows)
  dice_means = np.array([f["dice_mean"] for f in folds], np.float64)
  return {
      "root": str(root),
      "num_folds": num_folds,
      "target_class": target,
      "folds": folds,
      "fold_dice_mean": {
          "mean": float(dice_means.mean()),
          "std": float(dice_means.std(ddof=1)) if num_folds > 1 else None,
      },
      "pooled": report_lib.class_summary(
          pooled_rows, spacing_known=False,
          bootstrap_samples=bootstrap_samples, seed=seed),
      "note": ("Each fold's checkpoint was selected on its own validation "
               "split, so these scores are optimistic."),
  }


def _format(value: float | None, digits: int = 3) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return f"{value:.{digits}f}"


def to_markdown(cv_report: dict[str, Any]) -> str:
  """Formats the report as a Markdown table, one row per fold plus pooled."""
  target = cv_report["target_class"]
  lines = [
      f"# Cross-validation of {target}, {cv_report['num_folds']} folds",
      "",
      "Scores on each fold's validation split at the original frame size. "
      "Each fold's checkpoint was selected on that split, so the scores are "
      "optimistic.",
      "",
      "| fold | validation subjects | frames | frames with "
      f"{target} | mean Dice | mean Dice, frames with {target} | "
      "mean HD95 px (missing) | pooled Dice |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for fold in cv_report["folds"]:
    lines.append(
        f"| {fold['fold']} | {', '.join(fold['validation_subjects'])} | "
        f"{fold['frames']} | {fold['frames_with_class']} | "
        f"{_format(fold['dice_mean'])} | "
        f"{_format(fold['dice_mean_with_class'])} | "
        f"{_format(fold['hd95_mean'], 1)} ({fold['hd95_missing']}) | "
        f"{_format(fold['pooled_dice'])} |")
  pooled = cv_report["pooled"]
  metrics = pooled["metrics"]
  lines.append(
      f"| all | | {pooled['frames']} | {pooled['frames_with_class']} | "
      f"{_format(metrics['dice']['mean'])} "
      f"[{_format(metrics['dice']['ci95_low'])}, "
      f"{_format(metrics['dice']['ci95_high'])}] | "
      f"{_format(pooled['metrics_with_class']['dice']['mean'])} | "
      f"{_format(metrics['hd95']['mean'], 1)} "
      f"({pooled['missing_distance']}) | "
      f"{_format(pooled['pooled']['dice'])} |")
  spread = cv_report["fold_dice_mean"]
  lines += ["", f"Mean Dice over folds: {_format(spread['mean'])} "
            f"(standard deviation {_format(spread['std'])}). The pooled row "
            "gives the bootstrap 95% interval over frames in brackets.", ""]
  return "\n".join(lines)


def write_report(root: str | pathlib.Path,
                 cv_report: dict[str, Any]) -> None:
  root = pathlib.Path(root)
  report_lib.write_atomically(root / REPORT_JSON,
                              report_lib.to_json(cv_report))
  report_lib.write_atomically(root / REPORT_MARKDOWN, to_markdown(cv_report))
