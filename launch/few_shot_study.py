"""Cross-validates the few-shot settings and tabulates spleen and liver scores.

  python launch/few_shot_study.py --root runs/few_shot \
      --config.data.manual_dir=PATH_TO_ABDOMINAL_US [--config.KEY=VALUE ...]

Runs, one after the other, the self-supervised pretraining that the
`pretrained` and `all` settings start from (ROOT/ssl), then for each setting
a subject-wise cross-validation of configs/few_shot.py with
launch/cross_validate.py (ROOT/<setting>/fold_<k>). Finished runs are kept and
resumed, so running the script again only redoes what is missing. Writes the
table to ROOT/few_shot_table.md and ROOT/few_shot_table.json.

Scores come from each fold's evaluation of its held-out subject at the last
step, after the configured post-processing (largest component):
  spleen Dice: mean over the held-out frames that show a spleen.
  empty: frames with a spleen whose prediction has none.
  FP frames: spleen-free frames with a predicted spleen.
  liver Dice: mean over the held-out frames that show liver.
"""

import argparse
import csv
import json
import logging
import os
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_FOLDS = 3
FOREGROUND = ("--config.data.foreground_fraction=0.5",
              "--config.data.foreground_crop_probability=0.5",
              "--config.loss.tversky_alpha=0.3",
              "--config.loss.tversky_beta=0.7")
SEMI = ("--config.semi.enabled=True",)
PRETRAINED = ("--config.init_from={ssl}",)
SETTINGS = {
    "baseline": (),
    "foreground": FOREGROUND,
    "pretrained": PRETRAINED,
    "semi": SEMI,
    "all": FOREGROUND + PRETRAINED + SEMI,
}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", required=True, type=pathlib.Path,
                      help="Folder of the runs and the table.")
  parser.add_argument("--settings", default=",".join(SETTINGS),
                      help="Comma-separated settings to run, from "
                      f"{', '.join(SETTINGS)}.")
  parser.add_argument("--table_only", action="store_true",
                      help="Only rebuild the table from finished runs.")
  args, overrides = parser.parse_known_args(argv)
  unknown = [o for o in overrides if not o.startswith("--config.")]
  if unknown:
    parser.error(f"Unknown arguments {unknown}: only --config.KEY=VALUE "
                 "overrides are passed on to the runs.")
  args.settings = [s for s in args.settings.split(",") if s]
  bad = sorted(set(args.settings) - set(SETTINGS))
  if bad:
    parser.error(f"Unknown settings {bad}: choose from {', '.join(SETTINGS)}.")
  return args, overrides


def run(command: list[str]) -> None:
  """Runs a command from the repository root; exits if it fails."""
  logging.info("Running: %s", " ".join(command))
  result = subprocess.run(command, cwd=REPO, env=dict(os.environ),
                          check=False)
  if result.returncode != 0:
    sys.exit(f"Command failed with exit status {result.returncode}: "
             f"{' '.join(command)}. Fix the cause and run the script again; "
             "finished runs are kept.")


def pretrain_command(root: pathlib.Path, overrides: list[str]) -> list[str]:
  """Self-supervised pretraining with the few-shot config's input size."""
  sys.path.insert(0, str(REPO))
  from configs import few_shot  # pylint: disable=g-import-not-at-top
  size = []
  # A repeated tuple override appends instead of replacing, so the default
  # size is passed only when the command line sets none.
  if not any(o.startswith("--config.data.image_size=") for o in overrides):
    height, width = few_shot.get_config().data.image_size
    size = [f"--config.data.image_size=({height},{width})"]
  return [sys.executable, "-m", "spleen_jax.main", "--mode=pretrain",
          "--config", str(REPO / "configs/ssl_pretrain.py"),
          "--workdir", str(root / "ssl"), *size, *overrides]


def setting_command(root: pathlib.Path, setting: str,
                    overrides: list[str]) -> list[str]:
  flags = [flag.format(ssl=root / "ssl") for flag in SETTINGS[setting]]
  return [sys.executable, str(REPO / "launch/cross_validate.py"),
          "--config", str(REPO / "configs/few_shot.py"),
          "--root", str(root / setting), "--num_folds", str(NUM_FOLDS),
          *overrides, *flags]


def read_rows(root: pathlib.Path, setting: str) -> list[dict[str, str]]:
  """Reads the per-frame rows of every fold of a setting."""
  rows = []
  for fold in range(NUM_FOLDS):
    path = (root / setting / f"fold_{fold}" / "eval" / "validation" /
            "per_image.csv")
    if not path.is_file():
      raise FileNotFoundError(f"{path} not found: run the study again to "
                              f"finish setting {setting!r}.")
    with open(path, newline="") as file:
      rows.extend(csv.DictReader(file))
  return rows


def score(rows: list[dict[str, str]]) -> dict[str, float | int | list]:
  """Computes the table's columns from per-frame rows of all folds."""

  def of_class(name):
    return [r for r in rows if r["class"] == name]

  spleen, liver = of_class("spleen"), of_class("liver")
  positive = [r for r in spleen if float(r["area_truth"]) > 0]
  negative = [r for r in spleen if float(r["area_truth"]) == 0]
  liver_positive = [r for r in liver if float(r["area_truth"]) > 0]
  return {
      "spleen_dice": float(np.mean([float(r["dice"]) for r in positive])),
      "spleen_dice_per_frame": {r["file_name"]: round(float(r["dice"]), 3)
                                for r in positive},
      "spleen_frames": len(positive),
      "empty_on_spleen_frames": sum(float(r["area_prediction"]) == 0
                                    for r in positive),
      "false_positive_frames": sum(float(r["area_prediction"]) > 0
                                   for r in negative),
      "spleen_free_frames": len(negative),
      "liver_dice": float(np.mean([float(r["dice"])
                                   for r in liver_positive])),
      "liver_frames": len(liver_positive),
  }


def to_markdown(table: dict[str, dict]) -> str:
  lines = ["| setting | spleen Dice (frames with spleen) | empty on spleen "
           "frames | spleen-free frames with FP spleen | liver Dice |",
           "|---|---|---|---|---|"]
  for setting, row in table.items():
    lines.append(
        f"| {setting} | {row['spleen_dice']:.3f} (n={row['spleen_frames']}) "
        f"| {row['empty_on_spleen_frames']} of {row['spleen_frames']} "
        f"| {row['false_positive_frames']} of {row['spleen_free_frames']} "
        f"| {row['liver_dice']:.3f} (n={row['liver_frames']}) |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  args, overrides = parse_args(argv)
  args.root.mkdir(parents=True, exist_ok=True)
  root = args.root.resolve()

  if not args.table_only:
    needs_ssl = any(PRETRAINED[0] in SETTINGS[s] for s in args.settings)
    if needs_ssl:
      run(pretrain_command(root, overrides))
    for setting in args.settings:
      run(setting_command(root, setting, overrides))

  table = {s: score(read_rows(root, s)) for s in args.settings}
  markdown = to_markdown(table)
  for name, content in (("few_shot_table.md", markdown),
                        ("few_shot_table.json", json.dumps(table, indent=2))):
    temporary = root / (name + ".tmp")
    temporary.write_text(content)
    temporary.replace(root / name)
  print(markdown)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
