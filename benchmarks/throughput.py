"""Training and inference throughput of the U-Net: JAX against PyTorch on CPU.

Usage (from the repository root):
  python benchmarks/throughput.py            # full run, about 10 minutes on 2 cores
  python benchmarks/throughput.py --quick    # under 3 minutes on 2 cores
  python benchmarks/throughput.py --profile  # time the phases of one step

Each implementation runs in its own worker process, started by this script:
  jax            `spleen_jax.core.steps.train_step` and `predict_logits`
                 under `jax.jit`, the train step with the state donated as in
                 `spleen_jax.train`.
  torch_eager    the same U-Net (`benchmarks/torch_unet.py`), loss, clipping
                 and Adam in PyTorch eager mode.
  torch_compile  the same, with the model and loss under `torch.compile`; the
                 gradient clipping and Adam update stay eager.
  pipeline       `spleen_jax.data.input_pipeline.train_dataset` with the
                 config's augmentation, on synthetic 640x480 frames
                 letterboxed to the model's input size.
  jax_tfdata     the `jax` train step fed by that pipeline in one process, as
                 in the training loop of `spleen_jax.train`.

The parent drives the workers in turns: a chunk of timed steps in one worker
while the others wait on their input. Before each chunk it waits until no
worker uses CPU time (a tf.data prefetch may still be filling its buffer), so
only one implementation computes at a time. Every worker reports its own peak
RSS (`resource.getrusage`). Model, loss and optimizer settings come from
`configs/base.py`. The train steps use a constant learning rate in place of
the config's warm-up schedule, because both cost the same per step.

`--impl` replaces the list of workers. Each value is a kind followed by
optional `key=value` settings, for example
  --impl jax --impl 'jax donate=0' --impl 'jax prng=rbg'
runs the baseline and two variants side by side. Settings of every kind:
`upsampling`, `base_features`, `label`. Settings of `jax` and `jax_tfdata`:
`donate` (0 or 1), `precision` (a `jax_default_matmul_precision` value),
`dtype` (`float32` or `bfloat16`), `prng` (a `jax_default_prng_impl` value),
`xla_flags` (XLA flags separated by `;`) and `pool` (`reshape` replaces
`flax.linen.max_pool` in that worker by `reshape_max_pool`). Setting of
`torch_eager` and `torch_compile`: `channels_last` (0 or 1).

The last line printed is `ratio jax/pytorch: train=X infer=Y`: images per
second of the first `jax` worker divided by those of the first `torch_eager`
worker (`n/a` when either is missing or failed).
"""

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
KINDS = ("jax", "torch_eager", "torch_compile", "pipeline", "jax_tfdata")
JAX_KINDS = ("jax", "jax_tfdata")
TORCH_KINDS = ("torch_eager", "torch_compile")
COMMON_SETTINGS = ("upsampling", "base_features", "label")
KIND_SETTINGS = {
    "jax": ("donate", "precision", "dtype", "prng", "xla_flags", "pool"),
    "jax_tfdata": ("donate", "precision", "dtype", "prng", "xla_flags",
                   "pool"),
    "torch_eager": ("channels_last",),
    "torch_compile": ("channels_last",),
    "pipeline": (),
}
# Shape of the synthetic ultrasound frames fed to the pipeline, in pixels.
FRAME_HEIGHT, FRAME_WIDTH = 480, 640
NUM_SYNTHETIC_FRAMES = 32
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch",
            "tensorflow-cpu")


def num_cores() -> int:
  """CPU cores this process may run on, as `nproc` counts them."""
  return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------------------
# Worker side: one implementation per process, driven over stdin and stdout.
# ---------------------------------------------------------------------------


def _current_rss_kib() -> int:
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith("VmRSS:"):
        return int(line.split()[1])
  return 0


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _median_seconds(function, steps: int) -> float:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def reshape_max_pool(inputs, window_shape, strides=None, padding="VALID"):
  """2x2, stride-2 max pooling as a reshape and a max over two axes.

  Its gradient is a comparison with the maximum instead of the
  select-and-scatter of `lax.reduce_window`. The two differ only where the
  maximum of a window occurs more than once. There this one splits the
  gradient between the tied positions and `flax.linen.max_pool` passes it to
  one of them. Other pooling shapes fall back to `flax.linen.max_pool`.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  strides = tuple(strides or window_shape)
  if (tuple(window_shape) != (2, 2) or strides != (2, 2) or padding != "VALID"
      or inputs.ndim != 4):
    return _FLAX_MAX_POOL(inputs, window_shape, strides=strides,
                          padding=padding)
  n, h, w, c = inputs.shape
  return inputs.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


_FLAX_MAX_POOL = None


class JaxWorker:
  """Runs `steps.train_step` and `steps.predict_logits` under `jax.jit`."""

  def __init__(self, spec: dict[str, Any], settings: dict[str, Any]):
    options = spec["options"]
    import jax  # pylint: disable=g-import-not-at-top
    if "precision" in options:
      jax.config.update("jax_default_matmul_precision", options["precision"])
    if "prng" in options:
      jax.config.update("jax_default_prng_impl", options["prng"])
    if options.get("pool", "flax") == "reshape":
      import flax.linen  # pylint: disable=g-import-not-at-top
      global _FLAX_MAX_POOL
      _FLAX_MAX_POOL = flax.linen.max_pool
      # `spleen_jax.core.model` calls `nn.max_pool` at trace time, so this
      # replaces it for the models built in this worker process only.
      flax.linen.max_pool = reshape_max_pool
    elif options.get("pool", "flax") != "flax":
      raise ValueError(f"Unknown pool {options['pool']!r}: choose `flax` or "
                       "`reshape`.")
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from spleen_jax.core import model as model_lib  # pylint: disable=g-import-not-at-top
    from spleen_jax.core import steps  # pylint: disable=g-import-not-at-top

    self.jax = jax
    self.steps = steps
    self.settings = settings
    height, width = settings["image_size"]
    batch_size = settings["batch_size"]
    self.model = model_lib.UNet(
        num_classes=settings["num_classes"], depth=settings["depth"],
        base_features=settings["base_features"],
        normalization=settings["normalization"],
        dropout_rate=settings["dropout_rate"],
        upsampling=settings["upsampling"],
        dtype=jnp.dtype(options.get("dtype", "float32")))
    schedule = steps.make_learning_rate_schedule(
        "constant", settings["learning_rate"], 1)
    self.optimizer = steps.make_optimizer(
        schedule, gradient_clip_norm=settings["gradient_clip_norm"])
    self.state = steps.create_train_state(
        self.model, jax.random.PRNGKey(0), (height, width, 1), self.optimizer)
    self.loss_config = steps.LossConfig(**settings["loss"])

    rng = np.random.default_rng(0)
    self.batch = jax.device_put({
        "image": rng.standard_normal((batch_size, height, width, 1),
                                     np.float32),
        "label": rng.integers(0, settings["num_classes"],
                              (batch_size, height, width), np.int32),
        "valid": np.ones(batch_size, np.float32),
    })

    loss_config = self.loss_config

    def train_step(state, batch):
      return steps.train_step(state, batch, loss_config)

    donate = int(options.get("donate", 1))
    self.train_step = jax.jit(train_step,
                              donate_argnums=(0,) if donate else ())
    self.predict = jax.jit(steps.predict_logits)

  def train_once(self, batch=None) -> None:
    self.state, outputs = self.train_step(self.state, batch or self.batch)
    self.jax.block_until_ready((self.state, outputs))

  def infer_once(self) -> None:
    self.jax.block_until_ready(self.predict(self.state, self.batch["image"]))

  def setup(self, warmup_steps: int) -> dict[str, Any]:
    start = time.perf_counter()
    self.train_once()
    first_train = time.perf_counter() - start
    for _ in range(warmup_steps):
      self.train_once()
    start = time.perf_counter()
    self.infer_once()
    first_infer = time.perf_counter() - start
    for _ in range(warmup_steps):
      self.infer_once()
    lowered = self.train_step.lower(self.state, self.batch)
    return {"first_train_s": first_train, "first_infer_s": first_infer,
            "train_gflop": _xla_gflop(lowered),
            "xla_intra_op_threads": self._count_xla_threads()}

  def _count_xla_threads(self) -> int:
    """Counts the XLA intra-op threads that appear in a traced train step."""
    profile = _trace(self.jax, self.train_once, 1)
    return len({line.name for plane in profile.planes for line in plane.lines
                if line.name.startswith("tf_XLAEigen")})

  def run(self, task: str, steps: int) -> list[float]:
    function = {"train": self.train_once, "infer": self.infer_once}[task]
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      function()
      times.append(time.perf_counter() - start)
    return times

  def profile(self, steps: int) -> dict[str, Any]:
    """Times forward, gradient and update separately, then traces XLA ops."""
    jax = self.jax
    model, batch, state = self.model, self.batch, self.state
    dropout_rng = jax.random.fold_in(state.dropout_rng, 0)
    weights = jax.numpy.ones(batch["label"].shape, jax.numpy.float32)
    loss_config = dataclasses.asdict(self.loss_config)
    from spleen_jax.core import losses  # pylint: disable=g-import-not-at-top

    @jax.jit
    def forward(params, batch_stats, images):
      return model.apply({"params": params, "batch_stats": batch_stats},
                         images, train=True, rngs={"dropout": dropout_rng},
                         mutable=["batch_stats"])

    def loss_fn(params, batch_stats, images, labels):
      logits, updates = model.apply(
          {"params": params, "batch_stats": batch_stats}, images, train=True,
          rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
      terms = losses.segmentation_loss(logits, labels, weights, **loss_config)
      return terms["loss"], updates

    forward_loss = jax.jit(loss_fn)
    gradient = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    _, grads = gradient(state.params, state.batch_stats, batch["image"],
                        batch["label"])
    update = jax.jit(lambda s, g: s.apply_gradients(grads=g))

    phases = {
        "forward (train mode)": lambda: forward(
            state.params, state.batch_stats, batch["image"]),
        "forward + loss": lambda: forward_loss(
            state.params, state.batch_stats, batch["image"], batch["label"]),
        "forward + loss + gradient": lambda: gradient(
            state.params, state.batch_stats, batch["image"], batch["label"]),
        "update (clip + Adam)": lambda: update(state, grads),
        "inference": lambda: self.predict(state, batch["image"]),
    }
    results = {}
    for name, function in phases.items():
      def call(function=function):
        jax.block_until_ready(function())
      call()
      results[name] = _median_seconds(call, steps)
    results["full train step"] = statistics.median(self.run("train", steps))

    profile = _trace(jax, self.train_once, min(steps, 5))
    hlo_text = self.train_step.lower(self.state, self.batch).compile().as_text()
    return {"phases_s": results,
            "ops": _aggregate_ops(profile, hlo_text, min(steps, 5))}


def _xla_gflop(lowered) -> float | None:
  """FLOPs of a lowered computation by XLA's cost analysis, in 1e9."""
  try:
    analysis = lowered.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(analysis, list):
    analysis = analysis[0] if analysis else {}
  flops = (analysis or {}).get("flops")
  return None if flops is None else flops / 1e9


def _trace(jax, function, steps: int):
  """Runs `function` `steps` times under `jax.profiler` and loads the trace."""
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder):
      for _ in range(steps):
        function()
    path = next(pathlib.Path(folder).rglob("*.xplane.pb"))
    return ProfileData.from_file(str(path))


def _aggregate_ops(profile, hlo_text: str, steps: int) -> list[dict[str, Any]]:
  """Sums the time of each XLA op over the traced steps, largest first.

  The XLA CPU runtime records one event per executed op (thunk), named as
  in the optimised HLO, on its `tf_XLA*` threads. Only those events count:
  the others are thread-pool bookkeeping or the parallel parts of an op,
  already inside the op's own event.
  """
  shapes = {}
  for line in hlo_text.splitlines():
    line = line.strip()
    if line.startswith(("%", "ROOT %")) and " = " in line:
      name, rest = line.removeprefix("ROOT ").split(" = ", 1)
      shapes[name.lstrip("%")] = rest[:160]
  totals = {}
  for plane in profile.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLA"):
        continue
      for event in line.events:
        name = event.name
        if name not in shapes or event.duration_ns <= 0:
          continue
        totals[name] = totals.get(name, 0.0) + event.duration_ns
  ops = [{"op": name, "ms_per_step": total / 1e6 / steps,
          "hlo": shapes[name]}
         for name, total in totals.items()]
  return sorted(ops, key=lambda op: -op["ms_per_step"])


class JaxTfdataWorker(JaxWorker):
  """The `jax` train step fed by the tf.data pipeline, as in training."""

  def __init__(self, spec: dict[str, Any], settings: dict[str, Any]):
    super().__init__(spec, settings)
    self.iterator = _make_pipeline(settings).as_numpy_iterator()

  def train_from_pipeline(self) -> None:
    self.train_once(next(self.iterator))

  def setup(self, warmup_steps: int) -> dict[str, Any]:
    start = time.perf_counter()
    self.train_from_pipeline()
    first_train = time.perf_counter() - start
    for _ in range(warmup_steps):
      self.train_from_pipeline()
    return {"first_train_s": first_train}

  def run(self, task: str, steps: int) -> list[float]:
    if task != "train":
      raise ValueError(f"jax_tfdata runs only `train`, got {task!r}.")
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      self.train_from_pipeline()
      times.append(time.perf_counter() - start)
    return times


def _make_pipeline(settings: dict[str, Any]):
  """Builds `train_dataset` on synthetic letterboxed 640x480 frames."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from spleen_jax.data import augment  # pylint: disable=g-import-not-at-top
  from spleen_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  images, labels, boxes = [], [], []
  for _ in range(NUM_SYNTHETIC_FRAMES):
    frame = rng.integers(0, 256, (FRAME_HEIGHT, FRAME_WIDTH, 1), np.uint8)
    label = rng.integers(0, settings["num_classes"],
                         (FRAME_HEIGHT, FRAME_WIDTH), np.uint8)
    image, label, box = input_pipeline.letterbox_frame(
        frame, label, tuple(settings["image_size"]))
    images.append(image)
    labels.append(label)
    boxes.append(box.as_array())
  frames = input_pipeline.Frames(
      images=np.stack(images), labels=np.stack(labels), boxes=np.stack(boxes),
      file_names=[f"synthetic{i}.jpg" for i in range(len(images))],
      subjects=["synthetic"] * len(images))
  return input_pipeline.train_dataset(
      frames, batch_size=settings["batch_size"], seed=0,
      normalization=settings["data_normalization"],
      augmentation=augment.AugmentConfig(**settings["augment"]))


class PipelineWorker:
  """Pulls augmented batches from the tf.data pipeline as fast as it can."""

  def __init__(self, spec: dict[str, Any], settings: dict[str, Any]):
    del spec  # The pipeline has no settings of its own.
    self.dataset = _make_pipeline(settings)
    self.iterator = None

  def setup(self, warmup_steps: int) -> dict[str, Any]:
    start = time.perf_counter()
    self.iterator = self.dataset.as_numpy_iterator()
    next(self.iterator)
    first_batch = time.perf_counter() - start
    for _ in range(warmup_steps):
      next(self.iterator)
    return {"first_train_s": first_batch}

  def run(self, task: str, steps: int) -> list[float]:
    if task != "pipeline":
      raise ValueError(f"pipeline runs only `pipeline`, got {task!r}.")
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      next(self.iterator)
      times.append(time.perf_counter() - start)
    return times


class TorchWorker:
  """Runs the PyTorch U-Net eagerly or under `torch.compile`."""

  def __init__(self, spec: dict[str, Any], settings: dict[str, Any]):
    import torch  # pylint: disable=g-import-not-at-top
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import torch_unet  # pylint: disable=g-import-not-at-top

    torch.set_num_threads(num_cores())
    torch.manual_seed(0)
    self.torch = torch
    self.torch_unet = torch_unet
    options = spec["options"]
    height, width = settings["image_size"]
    batch_size = settings["batch_size"]
    self.memory_format = (torch.channels_last
                          if int(options.get("channels_last", 0))
                          else torch.contiguous_format)
    self.model = torch_unet.UNet(
        num_classes=settings["num_classes"], depth=settings["depth"],
        base_features=settings["base_features"],
        dropout_rate=settings["dropout_rate"],
        upsampling=settings["upsampling"]).to(memory_format=self.memory_format)
    self.optimizer = torch.optim.Adam(self.model.parameters(),
                                      lr=settings["learning_rate"])
    self.clip_norm = settings["gradient_clip_norm"]
    self.smooth = settings["loss"]["dice_smooth"]

    generator = torch.Generator().manual_seed(0)
    self.images = torch.randn(
        batch_size, 1, height, width, generator=generator).contiguous(
            memory_format=self.memory_format)
    self.labels = torch.randint(0, settings["num_classes"],
                                (batch_size, height, width),
                                generator=generator)
    self.weights = torch.ones(batch_size, height, width)

    def forward_loss(images, labels, weights):
      logits = self.model(images)
      return torch_unet.segmentation_loss(logits, labels, weights,
                                          self.smooth), logits

    self.forward_loss = forward_loss
    self.forward = self.model
    if spec["kind"] == "torch_compile":
      self.forward_loss = torch.compile(forward_loss)
      self.forward = torch.compile(self.model)

  def train_once(self) -> None:
    torch = self.torch
    self.model.train()
    terms, logits = self.forward_loss(self.images, self.labels, self.weights)
    self.optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
    self.optimizer.step()
    with torch.no_grad():
      counts = self.torch_unet.confusion_counts(logits, self.labels,
                                                self.weights)
    # Reading the results back, as the JAX step's outputs are.
    terms["loss"].item()
    counts.numpy()

  def infer_once(self) -> None:
    self.model.eval()
    with self.torch.inference_mode():
      self.forward(self.images).sum().item()

  def setup(self, warmup_steps: int) -> dict[str, Any]:
    start = time.perf_counter()
    self.train_once()
    first_train = time.perf_counter() - start
    for _ in range(warmup_steps):
      self.train_once()
    start = time.perf_counter()
    self.infer_once()
    first_infer = time.perf_counter() - start
    for _ in range(warmup_steps):
      self.infer_once()
    return {"first_train_s": first_train, "first_infer_s": first_infer,
            "torch_threads": self.torch.get_num_threads()}

  def run(self, task: str, steps: int) -> list[float]:
    function = {"train": self.train_once, "infer": self.infer_once}[task]
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      function()
      times.append(time.perf_counter() - start)
    return times

  def profile(self, steps: int) -> dict[str, Any]:
    """Times forward, backward and update separately, then the top aten ops."""
    torch = self.torch
    self.model.train()

    def forward():
      self.model(self.images).sum().item()

    def forward_loss():
      self.forward_loss(self.images, self.labels, self.weights)[0][
          "loss"].item()

    def gradient():
      self.optimizer.zero_grad(set_to_none=True)
      terms, _ = self.forward_loss(self.images, self.labels, self.weights)
      terms["loss"].backward()

    def update():
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
      self.optimizer.step()

    gradient()
    results = {
        "forward (train mode)": _median_seconds(forward, steps),
        "forward + loss": _median_seconds(forward_loss, steps),
        "forward + loss + gradient": _median_seconds(gradient, steps),
        "update (clip + Adam)": _median_seconds(update, steps),
        "inference": statistics.median(self.run("infer", steps)),
        "full train step": statistics.median(self.run("train", steps)),
    }
    profiled_steps = min(steps, 5)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
      for _ in range(profiled_steps):
        self.train_once()
    ops = [{"op": event.key,
            "ms_per_step": event.self_cpu_time_total / 1e3 / profiled_steps,
            "hlo": ""}
           for event in profiler.key_averages()]
    ops.sort(key=lambda op: -op["ms_per_step"])
    return {"phases_s": results, "ops": ops}


WORKER_CLASSES = {
    "jax": JaxWorker,
    "jax_tfdata": JaxTfdataWorker,
    "torch_eager": TorchWorker,
    "torch_compile": TorchWorker,
    "pipeline": PipelineWorker,
}


def worker_main(description: str) -> None:
  """Serves the parent's requests, one JSON object per line, until `quit`."""
  # Libraries may print to stdout, so the protocol gets its own copy of it
  # and stdout itself goes to stderr, which the parent writes to a log file.
  protocol = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)
  sys.path.insert(0, str(REPO_ROOT))
  request = json.loads(description)
  spec, settings = request["spec"], request["settings"]

  def reply(message: dict[str, Any]) -> None:
    protocol.write(json.dumps(message) + "\n")

  try:
    worker = WORKER_CLASSES[spec["kind"]](spec, settings)
  except Exception as error:  # pylint: disable=broad-except
    reply({"error": f"{type(error).__name__}: {error}"})
    return
  # Libraries, model, optimizer state and batch, before anything compiles.
  reply({"ready": True, "initial_rss_kib": _current_rss_kib()})

  for line in sys.stdin:
    command = json.loads(line)
    try:
      if command["cmd"] == "quit":
        return
      if command["cmd"] == "setup":
        result = worker.setup(command["warmup_steps"])
      elif command["cmd"] == "run":
        cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
        times = worker.run(command["task"], command["steps"])
        result = {"times": times, "cpu_s": _cpu_seconds() - cpu_start,
                  "wall_s": time.perf_counter() - wall_start}
      elif command["cmd"] == "profile":
        result = worker.profile(command["steps"])
      else:
        raise ValueError(f"Unknown command {command['cmd']!r}.")
      result["peak_rss_kib"] = resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss
      result["threads"] = len(os.listdir("/proc/self/task"))
      reply(result)
    except Exception as error:  # pylint: disable=broad-except
      reply({"error": f"{type(error).__name__}: {error}"})


# ---------------------------------------------------------------------------
# Parent side: start the workers, drive them in turns, report.
# ---------------------------------------------------------------------------


class WorkerError(RuntimeError):
  """A worker process failed or replied with an error."""


class WorkerProcess:
  """One worker subprocess and its JSON-lines connection."""

  def __init__(self, spec: dict[str, Any], settings: dict[str, Any],
               log_folder: pathlib.Path):
    self.spec = spec
    self.label = spec["label"]
    self.log_path = log_folder / f"{len(list(log_folder.iterdir()))}.log"
    environment = dict(os.environ)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "xla_flags" in spec["options"]:
      extra_flags = spec["options"]["xla_flags"].replace(";", " ")
      environment["XLA_FLAGS"] = (
          environment.get("XLA_FLAGS", "") + " " + extra_flags).strip()
    description = json.dumps({"spec": spec, "settings": settings})
    self.log_file = open(self.log_path, "w")
    self.process = subprocess.Popen(
        [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker",
         description],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log_file,
        text=True, env=environment, cwd=REPO_ROOT)
    self.results = {}
    self.error = None

  def receive(self) -> dict[str, Any]:
    line = self.process.stdout.readline()
    if not line:
      raise WorkerError(f"worker {self.label!r} exited with code "
                        f"{self.process.wait()}; last lines of its log "
                        f"{self.log_path}:\n{self.log_tail()}")
    message = json.loads(line)
    if "error" in message:
      raise WorkerError(f"worker {self.label!r} failed: {message['error']}")
    return message

  def request(self, **command) -> dict[str, Any]:
    self.process.stdin.write(json.dumps(command) + "\n")
    self.process.stdin.flush()
    return self.receive()

  def log_tail(self, lines: int = 15) -> str:
    self.log_file.flush()
    return "\n".join(self.log_path.read_text().splitlines()[-lines:])

  def cpu_ticks(self) -> int:
    """User plus system CPU time of the process, in clock ticks."""
    try:
      with open(f"/proc/{self.process.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
      return 0
    # `fields` starts at field 3 of proc(5), so utime (14) and stime (15)
    # are at 11 and 12.
    return int(fields[11]) + int(fields[12])

  def close(self) -> None:
    if self.process.poll() is None:
      try:
        self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.process.stdin.flush()
        self.process.wait(timeout=30)
      except (BrokenPipeError, subprocess.TimeoutExpired):
        self.process.kill()
        self.process.wait()
    self.log_file.close()


def wait_until_idle(workers: list[WorkerProcess], timeout_s: float = 20.0,
                    interval_s: float = 0.25) -> bool:
  """Waits until no worker uses CPU time; returns False after `timeout_s`."""
  # An idle worker's helper threads still wake up now and then, so up to
  # 20 ms of CPU time per interval counts as idle.
  max_idle_ticks = max(1, round(0.02 * os.sysconf("SC_CLK_TCK")))
  deadline = time.monotonic() + timeout_s
  before = [worker.cpu_ticks() for worker in workers]
  while time.monotonic() < deadline:
    time.sleep(interval_s)
    after = [worker.cpu_ticks() for worker in workers]
    if all(b - a <= max_idle_ticks for a, b in zip(before, after)):
      return True
    before = after
  return False


def parse_spec(text: str) -> dict[str, Any]:
  """Parses `kind key=value ...` into a worker description."""
  words = text.split()
  if not words or words[0] not in KINDS:
    raise ValueError(f"Invalid --impl {text!r}: it must start with one of "
                     f"{', '.join(KINDS)}.")
  kind, options = words[0], {}
  allowed = COMMON_SETTINGS + KIND_SETTINGS[kind]
  for word in words[1:]:
    key, separator, value = word.partition("=")
    if not separator or key not in allowed:
      raise ValueError(f"Invalid setting {word!r} in --impl {text!r}: "
                       f"{kind} takes {', '.join(allowed)} as key=value.")
    options[key] = value
  return {"kind": kind, "options": options,
          "label": options.get("label", text)}


def base_settings(args: argparse.Namespace) -> dict[str, Any]:
  """Reads model, loss and optimizer settings from configs/base.py."""
  sys.path.insert(0, str(REPO_ROOT))
  from configs import base  # pylint: disable=g-import-not-at-top
  config = base.get_config()
  image_size = tuple(config.data.image_size)
  if args.image_size:
    image_size = (args.image_size, args.image_size)
  fields = ("rotation_degrees", "scale", "translation", "flip_probability",
            "brightness", "contrast", "gamma", "noise_std")
  return {
      "image_size": image_size,
      "batch_size": args.batch_size or config.train.batch_size,
      "num_classes": 1 + len(config.data.classes),
      "depth": config.model.depth,
      "base_features": args.base_features or config.model.base_features,
      "normalization": config.model.normalization,
      "dropout_rate": config.model.dropout_rate,
      "upsampling": args.upsampling or config.model.upsampling,
      "learning_rate": config.train.learning_rate,
      "gradient_clip_norm": config.train.gradient_clip_norm,
      "loss": config.loss.to_dict(),
      "data_normalization": config.data.normalization,
      "augment": {field: config.augment[field] for field in fields},
  }


def worker_settings(spec: dict[str, Any],
                    settings: dict[str, Any]) -> dict[str, Any]:
  settings = dict(settings)
  if "upsampling" in spec["options"]:
    settings["upsampling"] = spec["options"]["upsampling"]
  if "base_features" in spec["options"]:
    settings["base_features"] = int(spec["options"]["base_features"])
  if settings["normalization"] != "batch" and spec["kind"] in TORCH_KINDS:
    raise ValueError("benchmarks/torch_unet.py implements only BatchNorm, "
                     f"not {settings['normalization']!r}.")
  return settings


def machine_description() -> dict[str, Any]:
  cpu_model = platform.processor() or "unknown"
  with open("/proc/cpuinfo") as cpuinfo:
    for line in cpuinfo:
      if line.startswith("model name"):
        cpu_model = line.split(":", 1)[1].strip()
        break
  with open("/proc/meminfo") as meminfo:
    memory_kib = int(meminfo.readline().split()[1])
  versions = {}
  for package in PACKAGES:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = "not installed"
  return {"cores": num_cores(), "cpu_model": cpu_model,
          "memory_gib": round(memory_kib / 2**20, 1),
          "python": platform.python_version(), "packages": versions}


def chunk_steps(args: argparse.Namespace, kind: str) -> int:
  """Steps per timed chunk; tf.data workers take more (see `summarize`)."""
  if kind == "pipeline":
    return max(8 * args.chunk_steps, 40)
  if kind == "jax_tfdata":
    return 2 * args.chunk_steps
  return args.chunk_steps


def tasks_of(kind: str) -> tuple[str, ...]:
  if kind == "pipeline":
    return ("pipeline",)
  if kind == "jax_tfdata":
    return ("train",)
  return ("train", "infer")


def run_benchmark(args: argparse.Namespace, specs: list[dict[str, Any]],
                  settings: dict[str, Any]) -> dict[str, Any]:
  """Starts the workers, sets them up one at a time, then runs them in turns."""
  report = {
      "date": datetime.datetime.now().astimezone().isoformat(
          timespec="seconds"),
      "load_start": os.getloadavg(), "workers": {}, "idle_timeouts": 0}
  with tempfile.TemporaryDirectory(prefix="throughput_logs_") as folder:
    workers = []
    try:
      # Imports run in parallel; nothing is timed until every worker is ready.
      for spec in specs:
        workers.append(WorkerProcess(spec, worker_settings(spec, settings),
                                     pathlib.Path(folder)))
      active = []
      for worker in workers:
        try:
          worker.results["ready"] = worker.receive()
          active.append(worker)
        except WorkerError as error:
          worker.error = str(error)
      # Setup: the first step (compilation) and warm-up, one worker at a time.
      for worker in list(active):
        if not wait_until_idle(workers):
          report["idle_timeouts"] += 1
        try:
          worker.results["setup"] = worker.request(
              cmd="setup", warmup_steps=args.warmup_steps)
        except WorkerError as error:
          worker.error = str(error)
          active.remove(worker)
        print(f"  set up {worker.label}", file=sys.stderr, flush=True)

      # Timed chunks, in turns.
      for round_index in range(args.rounds):
        for worker in list(active):
          for task in tasks_of(worker.spec["kind"]):
            if not wait_until_idle(workers):
              report["idle_timeouts"] += 1
            try:
              result = worker.request(
                  cmd="run", task=task,
                  steps=chunk_steps(args, worker.spec["kind"]))
            except WorkerError as error:
              worker.error = str(error)
              active.remove(worker)
              break
            chunks = worker.results.setdefault(task, [])
            chunks.append(result)
        print(f"  round {round_index + 1}/{args.rounds} done",
              file=sys.stderr, flush=True)
    finally:
      for worker in workers:
        worker.close()
    for worker in workers:
      report["workers"][worker.label] = {
          "kind": worker.spec["kind"], "error": worker.error,
          **worker.results}
  report["load_end"] = os.getloadavg()
  return report


def summarize(worker_report: dict[str, Any], task: str,
              batch_size: int) -> dict[str, float] | None:
  """Images per second from the median step, with spread and CPU use.

  `images_per_s_steady` counts only the second half of each chunk: a tf.data
  iterator fills its buffers while the other workers run, and hands those
  batches out at once at the start of its next chunk.
  """
  chunks = worker_report.get(task)
  if not chunks:
    return None
  times = [t for chunk in chunks for t in chunk["times"]]
  later_halves = [t for chunk in chunks
                  for t in chunk["times"][len(chunk["times"]) // 2:]]
  median = statistics.median(times)
  quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [median] * 3
  return {
      "images_per_s": batch_size / median,
      "images_per_s_steady": batch_size * len(later_halves) / sum(later_halves),
      "steps": len(times),
      "iqr_percent": 100 * (quartiles[2] - quartiles[0]) / median,
      "cores_used": (sum(c["cpu_s"] for c in chunks) /
                     sum(c["wall_s"] for c in chunks)),
  }


def peak_rss_mib(worker_report: dict[str, Any]) -> float | None:
  """Largest peak RSS that the worker reported, in MiB."""
  peaks = []
  for value in worker_report.values():
    for message in value if isinstance(value, list) else [value]:
      if isinstance(message, dict) and "peak_rss_kib" in message:
        peaks.append(message["peak_rss_kib"])
  return max(peaks) / 1024 if peaks else None


def format_number(value, pattern: str = "{:.2f}") -> str:
  return "n/a" if value is None else pattern.format(value)


def print_settings(args, report, settings, machine) -> None:
  """Prints date, command, machine, packages, model, steps and load."""
  batch_size = settings["batch_size"]
  print(f"date: {report['date']} (start)")
  print(f"command: {' '.join([pathlib.Path(sys.executable).name, *sys.argv])}")
  print(f"machine: {machine['cores']} cores ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB memory, Python {machine['python']}")
  print("packages: " + ", ".join(f"{name} {version}" for name, version in
                                 machine["packages"].items()))
  print(f"model: U-Net depth {settings['depth']}, base_features "
        f"{settings['base_features']}, {settings['normalization']} norm, "
        f"dropout {settings['dropout_rate']}, {settings['upsampling']} "
        f"up-sampling, {settings['num_classes']} classes. Input "
        f"{settings['image_size'][0]}x{settings['image_size'][1]}x1, batch "
        f"{batch_size}. Loss soft Dice + cross-entropy, Adam "
        f"{settings['learning_rate']:g}, gradient clipping "
        f"{settings['gradient_clip_norm']:g}.")
  print(f"steps: first step timed alone, {args.warmup_steps} warm-up, then "
        f"{args.rounds} rounds of {args.chunk_steps} timed steps per task and "
        f"implementation ({args.rounds * args.chunk_steps} in all), "
        "implementations in turns")
  print(f"threads: torch.set_num_threads({num_cores()}). XLA sizes its own "
        "intra-op thread pool (no JAX option sets it), see `XLA threads` "
        "below.")
  print(f"load average (1, 5, 15 min): start {format_load(report['load_start'])}"
        f", end {format_load(report['load_end'])}")
  if report["load_start"][0] > 0.5 * num_cores():
    print("NOTE: the 1-minute load average was above half the core count at "
          "the start, so other work shared the CPU. Rerun when it is idle.")
  if report["idle_timeouts"]:
    print(f"NOTE: {report['idle_timeouts']} chunks started while a worker "
          "was still busy after 20 s of waiting.")
  print()


def table_row(spec: dict[str, Any], worker: dict[str, Any],
              batch_size: int) -> tuple[str, ...]:
  """Formats one implementation's row of the results table."""
  setup = worker.get("setup", {})
  infer = summarize(worker, "infer", batch_size)
  train_rate = None
  if spec["kind"] == "pipeline":
    train = summarize(worker, "pipeline", batch_size)
    train_rate = train and train["images_per_s_steady"]
  elif spec["kind"] == "jax_tfdata":
    train = summarize(worker, "train", batch_size)
    train_rate = train and train["images_per_s_steady"]
  else:
    train = summarize(worker, "train", batch_size)
    train_rate = train and train["images_per_s"]
  return (
      spec["label"],
      format_number(train_rate),
      format_number(infer and infer["images_per_s"]),
      format_number(setup.get("first_train_s"), "{:.1f}"),
      format_number(setup.get("first_infer_s"), "{:.1f}"),
      format_number(peak_rss_mib(worker), "{:.0f}"),
      format_number(worker["ready"]["initial_rss_kib"] / 1024, "{:.0f}"),
      format_number(train and train["cores_used"]),
      f"{format_number(train and train['iqr_percent'], '{:.0f}')}/"
      f"{format_number(infer and infer['iqr_percent'], '{:.0f}')}")


def print_table(report, settings, specs) -> None:
  """Prints one row per implementation, then each worker's thread counts."""
  batch_size = settings["batch_size"]
  header = ("implementation", "train img/s", "infer img/s", "first train s",
            "first infer s", "peak RSS MiB", "initial RSS MiB",
            "cores used (train)", "IQR % (train/infer)")
  rows = []
  for spec in specs:
    worker = report["workers"][spec["label"]]
    if worker["error"]:
      rows.append((spec["label"], "failed", *[""] * (len(header) - 2)))
    else:
      rows.append(table_row(spec, worker, batch_size))
  widths = [max(len(str(row[i])) for row in [header, *rows])
            for i in range(len(header))]
  for row in [header, *rows]:
    print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
  print("(train and infer: images/s of the median step. pipeline and "
        "jax_tfdata: images/s over the second half of each chunk, after the "
        "prefetched batches are used up. The `train` column of `pipeline` is "
        "its output rate and `first train s` its first batch. First step: "
        "compilation plus one step. Initial RSS: after imports and "
        "initialisation, before the first step.)")
  print()

  for spec in specs:
    worker = report["workers"][spec["label"]]
    if worker["error"]:
      print(f"{spec['label']} failed: {worker['error']}")
    setup = worker.get("setup", {})
    if "xla_intra_op_threads" in setup:
      gflop = setup.get("train_gflop")
      train = summarize(worker, "train", batch_size)
      achieved = (gflop * train["images_per_s"] / batch_size
                  if gflop and train else None)
      print(f"{spec['label']}: XLA threads seen in a traced train step: "
            f"{setup['xla_intra_op_threads']}. XLA cost analysis: "
            f"{format_number(gflop, '{:.1f}')} GFLOP per train step, "
            f"{format_number(achieved, '{:.1f}')} GFLOP/s achieved.")
    if "torch_threads" in setup:
      print(f"{spec['label']}: torch.get_num_threads() = "
            f"{setup['torch_threads']}")


def print_ratios(args, report, settings, specs) -> None:
  """Prints the pipeline's margin and the JAX/PyTorch ratios, last line last."""
  batch_size = settings["batch_size"]
  rates = {}
  for spec in specs:
    worker = report["workers"][spec["label"]]
    if worker["error"]:
      continue
    # The first worker of each kind is the one compared.
    rates.setdefault(spec["kind"], {
        "train": summarize(worker, "pipeline" if spec["kind"] == "pipeline"
                           else "train", batch_size),
        "infer": summarize(worker, "infer", batch_size)})
  if "pipeline" in rates and "jax" in rates and rates["jax"]["train"]:
    produced = rates["pipeline"]["train"]["images_per_s_steady"]
    consumed = rates["jax"]["train"]["images_per_s"]
    print(f"tf.data pipeline: {produced:.2f} img/s with augmentation, "
          "measured while no other worker ran. The jax train step consumes "
          f"{consumed:.2f} img/s (pipeline/train = {produced / consumed:.2f})."
          " In training both share the cores, see jax_tfdata.")
  print("load average (1, 5, 15 min) at the end: "
        f"{format_load(report['load_end'])}")

  def ratio(kind: str, task: str) -> str:
    jax_rate = rates.get("jax", {}).get(task)
    other = rates.get(kind, {}).get(task)
    if not jax_rate or not other:
      return "n/a"
    return f"{jax_rate['images_per_s'] / other['images_per_s']:.2f}"

  if "torch_compile" in rates:
    print(f"ratio jax/torch.compile: train={ratio('torch_compile', 'train')} "
          f"infer={ratio('torch_compile', 'infer')}")
  elif args.quick and not args.impl:
    print("torch.compile: not run, because --quick leaves it out. Compiling "
          "its train and inference steps takes longer than all timed steps "
          "of --quick together.")
  print(f"ratio jax/pytorch: train={ratio('torch_eager', 'train')} "
        f"infer={ratio('torch_eager', 'infer')}")


def format_load(load: tuple[float, float, float]) -> str:
  return " ".join(f"{value:.2f}" for value in load)


def print_profile(report: dict[str, Any], top: int) -> None:
  """Prints each worker's phase times, op groups and most expensive ops."""
  for label, result in report.items():
    print(f"\n{label}: median seconds per call")
    for phase, seconds in result["phases_s"].items():
      print(f"  {phase:28s} {seconds * 1e3:9.1f} ms")
    groups = {}
    for op in result["ops"]:
      # XLA numbers repeated op names: `ynn_fusion.12` is a `ynn_fusion`.
      group = op["op"].split(".")[0] if op["hlo"] else op["op"]
      groups[group] = groups.get(group, 0.0) + op["ms_per_step"]
    total = sum(groups.values())
    print(f"{label}: op groups, ms per train step (sum {total:.0f} ms; ops on "
          "different threads overlap)")
    for group, ms in sorted(groups.items(), key=lambda item: -item[1])[:top]:
      print(f"  {ms:8.1f}  {group}")
    print(f"{label}: top {top} ops, ms per train step")
    for op in result["ops"][:top]:
      print(f"  {op['ms_per_step']:8.1f}  {op['op'][:40]:40s} {op['hlo'][:110]}")


def run_profile(args, specs, settings) -> None:
  """Profiles one step of each `jax` and `torch_*` worker, one at a time."""
  print(f"load average at start: {format_load(os.getloadavg())}")
  report = {}
  with tempfile.TemporaryDirectory(prefix="throughput_logs_") as folder:
    for spec in specs:
      if spec["kind"] not in ("jax",) + TORCH_KINDS:
        continue
      worker = WorkerProcess(spec, worker_settings(spec, settings),
                             pathlib.Path(folder))
      try:
        worker.receive()
        worker.request(cmd="setup", warmup_steps=args.warmup_steps)
        report[spec["label"]] = worker.request(
            cmd="profile", steps=args.rounds * args.chunk_steps)
      finally:
        worker.close()
  print_profile(report, args.top_ops)
  print(f"\nload average at end: {format_load(os.getloadavg())}")


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="fewer steps and no torch.compile: under 3 minutes "
                           "on 2 cores")
  parser.add_argument("--profile", action="store_true",
                      help="time forward, gradient and update separately and "
                           "list the most expensive ops, instead of the "
                           "throughput table")
  parser.add_argument("--upsampling", choices=("transpose", "pixel_shuffle",
                                               "resize"),
                      help="up-sampling of every implementation (default: "
                           "configs/base.py)")
  parser.add_argument("--batch_size", type=int,
                      help="images per step (default: configs/base.py)")
  parser.add_argument("--image_size", type=int,
                      help="height and width of the square input, in pixels "
                           "(default: configs/base.py)")
  parser.add_argument("--base_features", type=int,
                      help="channels of the first U-Net level (default: "
                           "configs/base.py)")
  parser.add_argument("--impl", action="append",
                      help="a worker as `kind key=value ...`; repeat for "
                           "several (default: jax, torch_eager, torch_compile, "
                           "pipeline, jax_tfdata; --quick drops the last two "
                           "but the pipeline)")
  parser.add_argument("--rounds", type=int,
                      help="timed chunks per task and implementation "
                           "(default 6, --quick 2)")
  parser.add_argument("--chunk_steps", type=int,
                      help="timed steps per chunk (default 5, --quick 4)")
  parser.add_argument("--warmup_steps", type=int,
                      help="untimed steps after the first one (default 3, "
                           "--quick 1)")
  parser.add_argument("--top_ops", type=int, default=15,
                      help="ops listed per implementation by --profile")
  parser.add_argument("--json_output", type=pathlib.Path,
                      help="also write every measurement to this JSON file")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.rounds is None:
    args.rounds = 2 if args.quick else 6
  if args.chunk_steps is None:
    args.chunk_steps = 4 if args.quick else 5
  if args.warmup_steps is None:
    args.warmup_steps = 1 if args.quick else 3
  for name in ("rounds", "chunk_steps", "batch_size", "image_size",
               "base_features"):
    value = getattr(args, name)
    if value is not None and value < 1:
      parser.error(f"--{name} must be at least 1, got {value}.")
  if args.warmup_steps < 0:
    parser.error(f"--warmup_steps must be 0 or more, got {args.warmup_steps}.")
  return args


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  if args.worker:
    worker_main(args.worker)
    return

  if args.impl:
    impl_texts = args.impl
  elif args.quick:
    impl_texts = ["jax", "torch_eager", "pipeline"]
  else:
    impl_texts = ["jax", "torch_eager", "torch_compile", "pipeline",
                  "jax_tfdata"]
  try:
    specs = [parse_spec(text) for text in impl_texts]
  except ValueError as error:
    sys.exit(f"error: {error}")
  labels = [spec["label"] for spec in specs]
  if len(set(labels)) != len(labels):
    sys.exit(f"error: --impl values must differ, got {labels}; add "
             "`label=NAME` to tell repeated ones apart.")
  settings = base_settings(args)
  multiple = 2**settings["depth"]
  if settings["image_size"][0] % multiple or settings["image_size"][1] % multiple:
    sys.exit(f"error: --image_size {settings['image_size'][0]} is not "
             f"divisible by 2**depth = {multiple}.")

  if args.profile:
    run_profile(args, specs, settings)
    return
  machine = machine_description()
  report = run_benchmark(args, specs, settings)
  if args.json_output:
    args.json_output.write_text(json.dumps(
        {"machine": machine, "settings": settings, "report": report},
        indent=1))
  print_settings(args, report, settings, machine)
  print_table(report, settings, specs)
  print_ratios(args, report, settings, specs)


if __name__ == "__main__":
  main(sys.argv[1:])
