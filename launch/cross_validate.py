"""Trains and evaluates every cross-validation fold, then aggregates them.

  python launch/cross_validate.py --config configs/base.py --root runs/cv \
      --num_folds 2 --config.data.manual_dir=PATH [--config.KEY=VALUE ...]

Fold k trains in ROOT/fold_<k> with `data.num_folds` and `data.fold=k`, and
is evaluated on its validation split; see spleen_jax/evaluation/
cross_validation.py for the report. Every `--config.` override is passed to
each fold. Folds run one after the other; running the script again resumes
unfinished folds and evaluates them again. Writes ROOT/cv_report.json and
ROOT/cv_report.md.
"""

import argparse
import logging
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# pylint: disable=g-import-not-at-top,wrong-import-position
from spleen_jax import run_config
from spleen_jax.evaluation import cross_validation


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", required=True,
                      help="Config file, e.g. configs/base.py.")
  parser.add_argument("--root", required=True, type=pathlib.Path,
                      help="Folder for the fold runs and the report.")
  parser.add_argument("--num_folds", required=True, type=int,
                      help="Number of folds, at least 2.")
  parser.add_argument("--aggregate_only", action="store_true",
                      help="Only rebuild the report from finished folds.")
  args, overrides = parser.parse_known_args(argv)
  unknown = [o for o in overrides if not o.startswith("--config.")]
  if unknown:
    parser.error(f"Unknown arguments {unknown}: only --config.KEY=VALUE "
                 "overrides are passed on to the folds.")
  if args.num_folds < 2:
    parser.error(f"--num_folds is {args.num_folds}: use 2 or more.")
  return args, overrides


def fold_command(args: argparse.Namespace, overrides: list[str],
                 fold: int) -> list[str]:
  """Builds the command that trains and evaluates one fold."""
  return [
      sys.executable, "-m", "spleen_jax.main",
      "--config", str(pathlib.Path(args.config).resolve()),
      "--workdir", str(cross_validation.fold_dir(args.root.resolve(), fold)),
      "--mode=train_and_evaluate",
      f"--config.data.num_folds={args.num_folds}",
      f"--config.data.fold={fold}",
      # Folds assign train and validation subjects themselves.
      "--config.data.train_subjects=()",
      "--config.data.validation_subjects=()",
      "--config.eval.split=validation",
      "--config.eval.folder=",
      *overrides,
  ]


def main(argv: list[str]) -> int:
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  args, overrides = parse_args(argv)
  args.root.mkdir(parents=True, exist_ok=True)

  if not args.aggregate_only:
    for fold in range(args.num_folds):
      command = fold_command(args, overrides, fold)
      logging.info("Fold %d of %d: %s", fold, args.num_folds,
                   " ".join(command))
      result = subprocess.run(command, cwd=REPO, env=dict(os.environ),
                              check=False)
      if result.returncode != 0:
        logging.error("Fold %d failed with exit status %d; its log is above. "
                      "Fix the cause and run the script again to resume.",
                      fold, result.returncode)
        return result.returncode

  config = run_config.load_run_config(cross_validation.fold_dir(args.root, 0))
  report = cross_validation.aggregate(
      args.root, args.num_folds,
      bootstrap_samples=config.eval.get("bootstrap_samples", 1000),
      seed=config.eval.get("bootstrap_seed", 0))
  cross_validation.write_report(args.root, report)
  print(cross_validation.to_markdown(report))
  logging.info("Wrote %s and %s.", args.root / cross_validation.REPORT_JSON,
               args.root / cross_validation.REPORT_MARKDOWN)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
