"""The U-Net of `spleen_jax.core.model.UNet` in PyTorch, for benchmarks only.

Layers, widths, normalisation, dropout and up-sampling follow the Flax model,
so both frameworks run the same convolutions on the same shapes. Tensors are
NCHW, the PyTorch default. Known differences, none of which changes the
amount of work:
  * Parameters use PyTorch's default initialisation, not Flax's.
  * `BatchNorm2d` keeps the unbiased batch variance in its running average,
    where `flax.linen.BatchNorm` keeps the biased one. Momentum 0.1 here is
    Flax's momentum 0.9 (PyTorch weighs the new batch, Flax the old average).
  * `PixelShuffle` orders the 4C channels of the 1x1 convolution differently
    from `spleen_jax.core.model.depth_to_space`, which only permutes the
    convolution's output channels.
"""

import torch
from torch import nn
import torch.nn.functional as F

UPSAMPLINGS = ("transpose", "pixel_shuffle", "resize")


class ConvBlock(nn.Module):
  """Two 3x3 convolutions, each followed by BatchNorm and ReLU, then dropout."""

  def __init__(self, in_channels: int, features: int,
               dropout_rate: float = 0.0):
    super().__init__()
    layers = []
    for channels in (in_channels, features):
      layers += [
          nn.Conv2d(channels, features, 3, padding=1, bias=False),
          nn.BatchNorm2d(features, eps=1e-5, momentum=0.1),
          nn.ReLU(inplace=True),
      ]
    if dropout_rate > 0:
      layers.append(nn.Dropout(dropout_rate))
    self.layers = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.layers(x)


class UpSample(nn.Module):
  """Doubles height and width and sets the channel count to `features`."""

  def __init__(self, in_channels: int, features: int, method: str):
    super().__init__()
    if method not in UPSAMPLINGS:
      raise ValueError(f"Unknown upsampling {method!r}: "
                       f"choose from {', '.join(UPSAMPLINGS)}.")
    self.method = method
    if method == "transpose":
      self.conv = nn.ConvTranspose2d(in_channels, features, 2, stride=2)
    elif method == "pixel_shuffle":
      self.conv = nn.Conv2d(in_channels, 4 * features, 1)
      self.shuffle = nn.PixelShuffle(2)
    else:
      self.conv = nn.Conv2d(in_channels, features, 3, padding=1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.method == "transpose":
      return self.conv(x)
    if self.method == "pixel_shuffle":
      return self.shuffle(self.conv(x))
    # Half-pixel centres, as `jax.image.resize` samples.
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return self.conv(x)


class UNet(nn.Module):
  """U-Net with BatchNorm; the arguments mean what they mean in the Flax model.

  Maps `images: [n, channels, h, w]` float32 to `logits: [n, num_classes, h,
  w]`; h and w must be divisible by `2**depth`.
  """

  def __init__(self, num_classes: int, in_channels: int = 1, depth: int = 4,
               base_features: int = 16, dropout_rate: float = 0.1,
               upsampling: str = "pixel_shuffle"):
    super().__init__()
    self.depth = depth
    self.encoder = nn.ModuleList()
    channels = in_channels
    for level in range(depth):
      features = base_features * 2**level
      self.encoder.append(ConvBlock(channels, features))
      channels = features

    bottleneck_features = base_features * 2**depth
    self.bottleneck = ConvBlock(channels, bottleneck_features, dropout_rate)
    channels = bottleneck_features

    self.upsamples = nn.ModuleList()
    self.decoder = nn.ModuleList()
    for level in reversed(range(depth)):
      features = base_features * 2**level
      self.upsamples.append(UpSample(channels, features, upsampling))
      # The skip connection brings another `features` channels.
      self.decoder.append(ConvBlock(2 * features, features, dropout_rate))
      channels = features

    self.head = nn.Conv2d(channels, num_classes, 1)

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    multiple = 2**self.depth
    height, width = images.shape[-2:]
    if height % multiple or width % multiple:
      raise ValueError(f"Image size {height}x{width} is not divisible by "
                       f"2**depth = {multiple}.")

    x = images
    skips = []
    for block in self.encoder:
      x = block(x)
      skips.append(x)
      x = F.max_pool2d(x, 2)

    x = self.bottleneck(x)

    for upsample, block, skip in zip(self.upsamples, self.decoder,
                                     reversed(skips)):
      x = torch.cat([upsample(x), skip], dim=1)
      x = block(x)
    return self.head(x)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor,
                      weights: torch.Tensor, smooth: float = 1.0
                      ) -> dict[str, torch.Tensor]:
  """Computes soft Dice loss plus cross-entropy, as `spleen_jax.core.losses`.

  The Dice is pooled over the batch and averaged over the foreground classes
  (background excluded), with additive smoothing `smooth` in pixels; the
  cross-entropy is the weighted mean over pixels, in nats.

  Args:
    logits: `[n, classes, h, w]` float.
    labels: `[n, h, w]` int64 class ids.
    weights: `[n, h, w]` float pixel weights (1 counts, 0 masks out).
    smooth: additive smoothing of the Dice ratio.

  Returns:
    A dict of scalars: `loss`, `dice_loss` and `cross_entropy`.
  """
  num_classes = logits.shape[1]
  mask = weights[:, None]
  probabilities = torch.softmax(logits.float(), dim=1) * mask
  truth = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float() * mask
  axes = (0, 2, 3)
  intersection = torch.sum(probabilities * truth, dim=axes)
  denominator = (torch.sum(probabilities, dim=axes) +
                 torch.sum(truth, dim=axes))
  dice = (2.0 * intersection + smooth) / (denominator + smooth)
  dice_loss = 1.0 - dice[1:].mean()

  per_pixel = F.cross_entropy(logits.float(), labels, reduction="none")
  cross_entropy = (torch.sum(per_pixel * weights) /
                   torch.clamp(torch.sum(weights), min=1.0))
  return {"loss": dice_loss + cross_entropy, "dice_loss": dice_loss,
          "cross_entropy": cross_entropy}


def confusion_counts(logits: torch.Tensor, labels: torch.Tensor,
                     weights: torch.Tensor) -> torch.Tensor:
  """Returns `[classes, 3]` weighted TP, FP, FN of the arg-max prediction."""
  num_classes = logits.shape[1]
  predicted = torch.argmax(logits, dim=1)
  counts = []
  for class_id in range(num_classes):
    is_predicted = (predicted == class_id).float() * weights
    is_true = (labels == class_id).float() * weights
    true_positive = torch.sum(is_predicted * is_true)
    counts.append(torch.stack([true_positive,
                               torch.sum(is_predicted) - true_positive,
                               torch.sum(is_true) - true_positive]))
  return torch.stack(counts)
