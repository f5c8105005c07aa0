"""Command-line entry point: train, evaluate or pretrain a spleen_jax run.

  python -m spleen_jax.main --config configs/base.py --workdir runs/base \
      --config.data.manual_dir=PATH
  python -m spleen_jax.main --mode=evaluate --config configs/base.py \
      --workdir runs/base --config.data.manual_dir=PATH
"""

import json
import logging as std_logging
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tensorflow as tf

from spleen_jax import evaluate
from spleen_jax import pretrain
from spleen_jax import run_config
from spleen_jax import train

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Folder of the run: checkpoints, logs, "
                    "TensorBoard events and reports.")
flags.DEFINE_enum("mode", "train",
                  ["train", "evaluate", "train_and_evaluate", "pretrain"],
                  "`train` trains (and resumes); `evaluate` restores the best "
                  "checkpoint and scores eval.split; `train_and_evaluate` "
                  "does both; `pretrain` runs self-supervised masked "
                  "reconstruction on unlabelled frames (configs/"
                  "ssl_pretrain.py), for a later run's init_from.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() "
                  "first, for jobs of several hosts (SLURM, Cloud TPU); it "
                  "reads the coordinator and process ids from the "
                  "environment.")
flags.DEFINE_bool("restart", False, "Move a previous run in --workdir into "
                  "WORKDIR/archive/<time>/ and train from scratch.")
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/base.py; override fields "
    "with --config.train.learning_rate=3e-4.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
  """Drops INFO records of orbax and TFDS, which log every file they touch."""

  _PATHS = ("/orbax/", "/tensorflow_datasets/")

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno > std_logging.INFO or not any(
        path in record.pathname for path in self._PATHS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")

  if FLAGS.distributed:
    jax.distributed.initialize()

  # Keep TensorFlow off accelerators: it only feeds data to JAX.
  tf.config.set_visible_devices([], "GPU")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  logging.info("JAX process %d of %d, local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())

  config = FLAGS.config
  if FLAGS.restart and FLAGS.mode != "evaluate":
    run_config.archive_run(pathlib.Path(FLAGS.workdir))
  if FLAGS.mode == "pretrain":
    print(json.dumps(pretrain.pretrain(config, FLAGS.workdir), indent=2))
  if FLAGS.mode in ("train", "train_and_evaluate"):
    train.train_and_evaluate(config, FLAGS.workdir)
  if FLAGS.mode in ("evaluate", "train_and_evaluate"):
    report = evaluate.evaluate(config, FLAGS.workdir)
    print(json.dumps(report, indent=2, sort_keys=True))


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a config override naming no config field exits cleanly."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as error:
    # ml_collections raises these for a key that the config does not have.
    message = str(error).replace("\\n", " ").replace("\\'", "")
    message = message.replace("\n", " ").strip("'\" ")
    sys.exit(f"Invalid config override: {message}. Run with --helpfull to "
             "list the fields, or check the config file.")
  except flags.Error as error:
    sys.exit(f"Invalid command line: {error}. Run with --helpfull for the "
             "flags.")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
