"""Spleen segmentation on the real AbdomenUS frames.

Usage:
  python -m spleen_jax.main --config configs/base.py --workdir runs/base \
      --config.data.manual_dir=PATH_TO_ABDOMINAL_US
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Workdir of another run whose best checkpoint initialises the parameters
  # and BatchNorm statistics of a new run (see spleen_jax/init_from.py);
  # empty starts from random weights.
  config.init_from = ""

  config.data = ml_collections.ConfigDict()
  # `abdomen_us` (the real frames) or `us_phantom` (simulated frames).
  config.data.name = "abdomen_us"
  # Builder config of us_phantom: `default` (96/24/24 frames) or `tiny`
  # (8/4/4).
  config.data.phantom_config = "default"
  # Folder that contains `abdominal_US/`, or `abdominal_US/` itself.
  config.data.manual_dir = ""
  # Where TFDS writes the prepared dataset; empty means ~/tensorflow_datasets.
  config.data.tfds_data_dir = ""
  # Organs to segment, in training class order after background.
  config.data.classes = ("spleen",)
  config.data.image_size = (256, 256)
  # `zscore` (per frame) or `unit` (intensities / 255).
  config.data.normalization = "zscore"
  # Subjects per split. The shared frames have three annotated subjects and
  # only `a` and `b` show a spleen, so `a` trains, `b` validates and `h` tests.
  # An empty tuple draws that split by seeded fraction of the subjects instead;
  # an empty train tuple takes every subject that is left.
  config.data.train_subjects = ()
  config.data.validation_subjects = ("b",)
  config.data.test_subjects = ("h",)
  config.data.validation_fraction = 0.2
  config.data.test_fraction = 0.2
  config.data.split_seed = 0
  # Cross-validation: 2 or more deals the subjects outside the test split
  # into seeded folds, and fold `data.fold` validates. It requires empty
  # train_subjects and validation_subjects. 0 turns it off.
  config.data.num_folds = 0
  config.data.fold = 0
  # Foreground-aware sampling: this share of each batch comes from the train
  # frames that show `data.foreground_class`. Empty takes train.target_class,
  # or the first class when that is `mean`. With probability
  # `foreground_crop_probability` each such row is zoomed into a window of
  # `foreground_crop_scale` times the frame around the organ. 0 turns either
  # off. Neither helped in the cross-validation of docs/few_shot.md.
  config.data.foreground_fraction = 0.0
  config.data.foreground_class = ""
  config.data.foreground_crop_probability = 0.0
  config.data.foreground_crop_scale = 0.5
  # Several sources trained together: source name -> the data settings that
  # differ for it, plus its sampling `weight` (see spleen_jax/data/sources.py
  # and configs/mixture.py). Empty trains on the one source above.
  config.data.sources = ml_collections.ConfigDict()

  # Train-only augmentation; 0 turns a transform off.
  config.augment = ml_collections.ConfigDict()
  config.augment.enabled = True
  config.augment.rotation_degrees = 15.0
  config.augment.scale = 0.1
  config.augment.translation = 0.05
  config.augment.flip_probability = 0.3
  config.augment.brightness = 0.1
  config.augment.contrast = 0.2
  config.augment.gamma = 0.2
  config.augment.noise_std = 0.05

  config.model = ml_collections.ConfigDict()
  config.model.depth = 4
  config.model.base_features = 16
  # `batch`, `group` or `none`.
  config.model.normalization = "batch"
  config.model.num_groups = 8
  config.model.dropout_rate = 0.1
  # `pixel_shuffle` equals a 2x2 transposed convolution and trains faster on
  # CPU than `transpose`; `resize` is bilinear up-sampling plus a convolution.
  config.model.upsampling = "pixel_shuffle"
  # Computation dtype: `float32`, or `bfloat16` (mixed precision: parameters,
  # optimizer state and logits stay float32).
  config.model.dtype = "float32"

  config.loss = ml_collections.ConfigDict()
  config.loss.dice_weight = 1.0
  config.loss.cross_entropy_weight = 1.0
  # `batch` pools the soft Dice over the batch; `image` averages per frame.
  config.loss.dice_reduction = "batch"
  config.loss.dice_include_background = False
  config.loss.dice_smooth = 1.0
  # Tversky weights of false positives (alpha) and false negatives (beta) in
  # the Dice term; 0.5 and 0.5 is the soft Dice. beta > alpha favours recall.
  config.loss.tversky_alpha = 0.5
  config.loss.tversky_beta = 0.5
  # Cross-entropy weight of each class, background first; () weighs all 1.
  config.loss.class_weights = ()
  # Focal exponent of the cross-entropy; 0 is plain cross-entropy.
  config.loss.focal_gamma = 0.0

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 8
  config.train.num_steps = 400
  # Stop this process after this many steps (0: no limit), for job queues
  # with a time limit; the next run in the same workdir resumes.
  config.train.max_steps_per_run = 0
  config.train.learning_rate = 1e-3
  # `constant` or `warmup_cosine`.
  config.train.schedule = "warmup_cosine"
  config.train.warmup_steps = 30
  config.train.weight_decay = 0.0
  # Clip gradients to this global norm; 0 turns clipping off.
  config.train.gradient_clip_norm = 1.0
  config.train.log_every_steps = 10
  config.train.eval_every_steps = 25
  config.train.keep_checkpoints = 2
  # Early stopping and the best checkpoint follow this class's validation Dice.
  config.train.target_class = "spleen"
  # Validations without improvement before stopping; 0 turns it off.
  config.train.early_stopping_patience = 8
  config.train.early_stopping_min_delta = 0.001

  # Mean-teacher semi-supervised training on the `unlabeled` frames of the
  # subjects outside the validation and test splits (see
  # spleen_jax/core/semi_supervised.py). It is on by default because it was
  # the only setting that found the spleen on unseen subjects in a
  # subject-wise cross-validation (docs/few_shot.md). Foreground sampling,
  # SSL pretraining and all settings together predicted no spleen on any of
  # the 5 spleen frames there.
  config.semi = ml_collections.ConfigDict()
  config.semi.enabled = True
  config.semi.batch_size = 4
  config.semi.weight = 1.0
  config.semi.rampup_steps = 100
  config.semi.ema_decay = 0.99
  # `pseudo_label` or `consistency`.
  config.semi.loss = "pseudo_label"
  config.semi.confidence = 0.9
  # The student's view scales brightness, contrast, gamma and noise of
  # `augment` by this factor; the teacher's view has geometry only.
  config.semi.strong_scale = 2.0

  config.eval = ml_collections.ConfigDict()
  # `train`, `validation` or `test`. Only subjects `a` and `b` of the shared
  # frames show a spleen and both are needed for training and validation, so
  # the spleen is scored on the validation subject. The test subject `h`
  # measures false-positive spleen only (see eval.allow_absent_target).
  config.eval.split = "validation"
  # With several data.sources: the one source to evaluate; empty evaluates
  # the split of every source together.
  config.eval.source = ""
  # Checkpoint step to evaluate; -1 takes the best one.
  config.eval.step = -1
  config.eval.batch_size = 8
  # A folder of `X.png` frames with `X_mask.png` label maps of training class
  # ids, evaluated instead of eval.split when set.
  config.eval.folder = ""
  # Post-processing of the predicted label map at the frame's resolution.
  # Keeping the largest component raised the validation Dice and lowered the
  # HD95 of the spleen in each of the four runs measured, from 4 to 50 steps
  # of the smoke and base configs. Filling holes and the mirror did not help
  # consistently. Only 5 annotated frames show a spleen, so this is weak
  # evidence: compare `variants` in summary.json for a new model.
  config.eval.largest_component = True
  config.eval.fill_holes = False
  # Test-time augmentation: average the softmax over the left-right mirror
  # and over these zoom factors. (1.0,) means no zoom.
  config.eval.tta_flip = False
  config.eval.tta_scales = (1.0,)
  # Pixel size (row, column) in millimetres of the original frames, for
  # distances and areas in mm. Empty when unknown: the AbdomenUS release does
  # not state it.
  config.eval.pixel_spacing_mm = ()
  # Resamples of frames for the bootstrap 95% intervals, and their seed.
  config.eval.bootstrap_samples = 1000
  config.eval.bootstrap_seed = 0
  config.eval.figures = True
  # Frames in the example and worst-frame figures.
  config.eval.num_figure_frames = 6
  # Class of the post-processing comparison, threshold curve and figures.
  # Empty takes train.target_class, and the spleen (else the first class)
  # when that is `mean`.
  config.eval.target_class = ""
  # Evaluating a split without any pixel of that class stops with an error,
  # because its scores would only measure false positives. True scores it
  # anyway.
  config.eval.allow_absent_target = False
  return config
