"""Simulated B-mode frames of the left upper abdomen with exact label maps.

A frame is drawn in three steps:

1. Geometry and anatomy, in millimetres with the origin at the apex of a
   convex probe (x lateral, y down): a spleen outline with a drawn length,
   and around it kidney, liver edge, vessels, diaphragm, ribs and the layered
   body wall. Organs are polygons, rasterised at pixel centres into the label
   map (legend ids of `legend.py`) and into a finer map of tissue classes.
2. Acoustics on a polar grid of beams (depth samples x beam angles). Point
   scatterers get complex amplitudes scaled by each tissue's echogenicity,
   and steps in acoustic impedance along the beam add specular echoes.
   Round-trip attenuation accumulates along each beam, so ribs cast shadows
   and vessels enhance what lies behind them. Convolution with the point
   spread function, receiver noise, envelope detection, time-gain
   compensation and log compression follow.
3. Scan conversion of the polar image into the Cartesian frame; pixels
   outside the fan are black.

Everything is numpy and scipy, driven by one `numpy.random.Generator`, so a
seed fixes the frame. The stored spleen length is measured on the final
label map, never on the simulated image.
"""

import dataclasses
import math

import numpy as np
from scipy import ndimage
from scipy import signal
from scipy import spatial

from spleen_jax.data import legend

SPEED_OF_SOUND_M_PER_S = 1540.0
# Envelope SNR (mean / standard deviation) of fully developed speckle: the
# Rayleigh distribution gives sqrt(pi / (4 - pi)).
RAYLEIGH_SNR = math.sqrt(math.pi / (4.0 - math.pi))

SPLEEN = legend.legend_id("spleen")
KIDNEY = legend.legend_id("kidney")
LIVER = legend.legend_id("liver")
VESSELS = legend.legend_id("vessels")
BONES = legend.legend_id("bones")


# Tissue classes of the acoustic simulation. Several classes share one legend
# id (the kidney's cortex, sinus and pyramids are all `kidney`), and some have
# none (body wall layers, diaphragm, fascia streaks).
class Tissue:
  BACKGROUND = 0
  LIVER = 1
  KIDNEY_CORTEX = 2
  KIDNEY_SINUS = 3
  KIDNEY_PYRAMID = 4
  VESSEL_LUMEN = 5
  VESSEL_WALL = 6
  SPLEEN = 7
  RIB = 8
  DIAPHRAGM = 9
  STREAK = 10
  SKIN = 11
  FAT = 12
  MUSCLE = 13
  FASCIA = 14
  COUNT = 15


@dataclasses.dataclass(frozen=True)
class TissueProperties:
  """Acoustic properties of one tissue class.

  Attributes:
    echogenicity: mean backscattered intensity relative to soft tissue.
    attenuation_db_per_cm_mhz: one-way amplitude attenuation.
    impedance: relative acoustic impedance. A step along the beam returns a
      specular echo whose amplitude grows with the step.
  """

  echogenicity: float
  attenuation_db_per_cm_mhz: float
  impedance: float


# Relative values chosen so that the frames read like abdominal B-mode scans:
# kidney cortex darker than spleen, bright renal sinus fat, anechoic vessels
# with low attenuation, and bone that reflects strongly and blocks the beam.
TISSUES: dict[int, TissueProperties] = {
    Tissue.BACKGROUND: TissueProperties(1.00, 0.6, 1.00),
    Tissue.LIVER: TissueProperties(0.35, 0.5, 1.04),
    Tissue.KIDNEY_CORTEX: TissueProperties(0.15, 0.6, 1.02),
    Tissue.KIDNEY_SINUS: TissueProperties(1.60, 0.7, 0.96),
    Tissue.KIDNEY_PYRAMID: TissueProperties(0.10, 0.5, 1.02),
    Tissue.VESSEL_LUMEN: TissueProperties(0.003, 0.15, 0.99),
    Tissue.VESSEL_WALL: TissueProperties(2.00, 0.8, 1.08),
    Tissue.SPLEEN: TissueProperties(0.35, 0.5, 1.05),
    Tissue.RIB: TissueProperties(0.30, 20.0, 2.50),
    Tissue.DIAPHRAGM: TissueProperties(4.00, 0.8, 1.03),
    Tissue.STREAK: TissueProperties(1.60, 0.7, 1.06),
    Tissue.SKIN: TissueProperties(1.50, 0.8, 1.08),
    Tissue.FAT: TissueProperties(0.50, 0.6, 0.92),
    Tissue.MUSCLE: TissueProperties(1.00, 1.0, 1.04),
    Tissue.FASCIA: TissueProperties(1.80, 0.8, 1.06),
}


@dataclasses.dataclass(frozen=True)
class ScanGeometry:
  """Placement of a convex probe's fan in the frame.

  Pixel `(row, col)` has its centre at `x = (col - apex_col) * spacing_mm`,
  `y = (row - apex_row) * spacing_mm` millimetres from the apex, the centre
  of curvature of the probe, which lies above the frame. The fan covers
  radii `probe_radius_mm` to `probe_radius_mm + depth_mm` and beam angles
  within `half_angle` radians of straight down. Pixels are square.
  """

  height: int
  width: int
  spacing_mm: float
  apex_row: float
  apex_col: float
  probe_radius_mm: float
  depth_mm: float
  half_angle: float

  @property
  def max_radius_mm(self) -> float:
    return self.probe_radius_mm + self.depth_mm

  def pixel_polar(self) -> tuple[np.ndarray, np.ndarray]:
    """Returns radius (mm) and beam angle (radians) of every pixel centre."""
    rows, cols = np.mgrid[0:self.height, 0:self.width].astype(np.float32)
    x = (cols - self.apex_col) * self.spacing_mm
    y = (rows - self.apex_row) * self.spacing_mm
    return np.hypot(x, y), np.arctan2(x, y)

  def contains(self, radius: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Tells which polar positions lie inside the fan."""
    return ((radius >= self.probe_radius_mm) &
            (radius <= self.max_radius_mm) &
            (np.abs(angle) <= self.half_angle))

  def to_pixels(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps `[n, 2]` points (x, y in mm) to fractional rows and columns."""
    rows = self.apex_row + points_mm[:, 1] / self.spacing_mm
    cols = self.apex_col + points_mm[:, 0] / self.spacing_mm
    return rows, cols


@dataclasses.dataclass(frozen=True)
class PhantomFrame:
  """One simulated frame and its ground truth.

  Attributes:
    image: `[height, width]` uint8 B-mode frame, 0 outside the fan.
    label: `[height, width]` uint8 legend ids (spleen 5, kidney 2, liver 1,
      vessels 3, bones 8 for ribs, background 0); 0 outside the fan.
    sector: `[height, width]` bool, the pixels inside the fan.
    pixel_spacing_mm: `[2]` float32 row and column spacing.
    spleen_length_mm: maximum distance between the centres of two spleen
      pixels of `label` (the mask's Feret diameter), in mm.
    spleen_outline_length_mm: the Feret diameter of the spleen polygon that
      was rasterised, i.e. the drawn organ length. It exceeds
      `spleen_length_mm` by less than about two pixels.
    geometry: the fan's placement in the frame.
  """

  image: np.ndarray
  label: np.ndarray
  sector: np.ndarray
  pixel_spacing_mm: np.ndarray
  spleen_length_mm: float
  spleen_outline_length_mm: float
  geometry: ScanGeometry


# Fractions of the frame height above and below the fan, close to the
# layout of the SonoSite frames of the AbdomenUS release.
_TOP_MARGIN = 0.07
_FAN_HEIGHT = 0.82
_MAX_FAN_WIDTH = 0.96


# ---------------------------------------------------------------------------
# Measurement.


def feret_diameter_mm(mask: np.ndarray,
                      spacing_mm: tuple[float, float] | np.ndarray) -> float:
  """Returns the maximum distance between two pixel centres of `mask` in mm.

  Args:
    mask: `[height, width]` boolean mask.
    spacing_mm: row and column spacing.

  Returns:
    The Feret diameter, or 0 for a mask with fewer than two pixels.
  """
  rows, cols = np.nonzero(mask)
  if rows.size < 2:
    return 0.0
  points = np.stack([rows * float(spacing_mm[0]),
                     cols * float(spacing_mm[1])], axis=1)
  return _max_pairwise_distance(points)


def _max_pairwise_distance(points: np.ndarray) -> float:
  """Returns the diameter of a point set, through its convex hull."""
  if len(points) > 3:
    try:
      points = points[spatial.ConvexHull(points).vertices]
    except spatial.QhullError:
      pass  # Collinear points: every point is a candidate.
  difference = points[:, None, :] - points[None, :, :]
  return float(np.sqrt((difference**2).sum(-1)).max())


# ---------------------------------------------------------------------------
# Shapes, in mm around the origin.


def _ellipse(centre, semi_axes, angle, num_points=96) -> np.ndarray:
  t = np.linspace(0.0, 2.0 * np.pi, num_points, endpoint=False)
  local = np.stack([semi_axes[0] * np.cos(t), semi_axes[1] * np.sin(t)], 1)
  return _rotate(local, angle) + np.asarray(centre)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
  cosine, sine = math.cos(angle), math.sin(angle)
  return points @ np.array([[cosine, sine], [-sine, cosine]])


def _tube(path: np.ndarray, radius: float) -> np.ndarray:
  """Returns the outline of a band of half-width `radius` along a polyline."""
  tangent = np.gradient(path, axis=0)
  tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
  normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
  return np.concatenate([path + radius * normal,
                         (path - radius * normal)[::-1]])


def _smooth_curve(rng, start, direction, length, bend, num_points=40):
  """Returns a gently bending polyline of `length` mm from `start`."""
  steps = np.linspace(0.0, 1.0, num_points)
  angles = direction + bend * (steps - 0.5) + rng.normal(0, 0.05) * np.sin(
      np.pi * steps * rng.uniform(1, 3))
  increments = np.stack([np.cos(angles), np.sin(angles)], 1) * (
      length / (num_points - 1))
  increments[0] = 0.0
  return np.asarray(start) + np.cumsum(increments, axis=0)


def spleen_outline(rng: np.random.Generator, length_mm: float) -> np.ndarray:
  """Draws a crescent, lobulated spleen outline whose Feret diameter is given.

  The outline is centred on the origin with its long axis along x and its
  convex (diaphragmatic) side towards -y. Notches and lobules sit mostly on
  the concave (visceral) side, as in real spleens.

  Returns:
    `[n, 2]` polygon vertices in mm.
  """
  t = np.linspace(-1.0, 1.0, 181)
  half_length = 0.5
  bend = rng.uniform(0.08, 0.25)
  thickness = rng.uniform(0.22, 0.36)
  centre = np.stack([half_length * t, bend * t**2], axis=1)
  tangent = np.stack([np.full_like(t, half_length), 2 * bend * t], axis=1)
  tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
  outward = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)

  # Rounded poles of different bluntness, widest off-centre.
  exponent = np.where(t < 0, rng.uniform(0.45, 0.7), rng.uniform(0.5, 0.9))
  skew = rng.uniform(-0.25, 0.25)
  profile = (1.0 - t**2)**exponent * (1.0 + skew * t)
  outer = 0.5 * thickness * profile * rng.uniform(0.45, 0.6)
  inner = 0.5 * thickness * profile * 2.0 - outer

  # Lobulation on the visceral side and a few notches.
  for harmonic in range(3, 8):
    inner *= 1.0 + rng.uniform(0.0, 0.06) * np.sin(
        harmonic * np.pi * (t + 1) / 2 + rng.uniform(0, 2 * np.pi))
  for _ in range(rng.integers(0, 4)):
    position = rng.uniform(-0.7, 0.7)
    depth = rng.uniform(0.15, 0.5)
    width = rng.uniform(0.04, 0.08)
    notch = 1.0 - depth * np.exp(-((t - position) / width)**2)
    if rng.random() < 0.75:
      inner *= notch
    else:
      outer *= notch

  polygon = np.concatenate([centre + outer[:, None] * outward,
                            (centre - inner[:, None] * outward)[::-1]])
  polygon -= polygon.mean(axis=0)
  return polygon * (length_mm / _max_pairwise_distance(polygon))


def sample_spleen_length_mm(rng: np.random.Generator) -> float:
  """Draws a spleen length from a mix of children and adults.

  A quarter are children (45 to 100 mm, about newborn to adolescent), 60%
  are adults with a normal spleen (about 110 +- 12 mm, 88 to 135 mm), and
  15% have splenomegaly (135 to 190 mm).
  """
  draw_group = rng.random()
  if draw_group < 0.25:
    return float(rng.uniform(45.0, 100.0))
  if draw_group < 0.85:
    return float(np.clip(rng.normal(110.0, 12.0), 88.0, 135.0))
  return float(rng.uniform(135.0, 190.0))


# ---------------------------------------------------------------------------
# Scene: geometry and organ polygons.


@dataclasses.dataclass
class _Scene:
  """The drawn anatomy of one frame, before rasterisation."""

  geometry: ScanGeometry
  wall_mm: float
  fat_mm: float
  # (tissue class, legend id or 0, polygon in mm), painted in order.
  shapes: list[tuple[int, int, np.ndarray]]
  spleen: np.ndarray
  spleen_length_mm: float
  frequency_mhz: float


def _make_geometry(rng, height, width, depth_mm) -> ScanGeometry:
  """Fits a fan of the drawn probe and the given depth into the frame."""
  probe_radius = rng.uniform(40.0, 60.0)
  half_angle = math.radians(rng.uniform(26.0, 34.0))
  spacing = depth_mm / (_FAN_HEIGHT * height)
  half_width_mm = (probe_radius + depth_mm) * math.sin(half_angle)
  spacing = max(spacing, 2.0 * half_width_mm / (_MAX_FAN_WIDTH * width))
  top_row = _TOP_MARGIN * height
  return ScanGeometry(
      height=height, width=width, spacing_mm=spacing,
      apex_row=top_row - probe_radius / spacing,
      apex_col=(width - 1) / 2.0 + rng.uniform(-0.02, 0.02) * width,
      probe_radius_mm=probe_radius, depth_mm=depth_mm, half_angle=half_angle)


def _inside_fan(geometry, points, min_depth_mm, margin_mm) -> bool:
  radius = np.hypot(points[:, 0], points[:, 1])
  angle = np.arctan2(points[:, 0], points[:, 1])
  lateral_margin = margin_mm / np.maximum(radius, 1.0)
  return bool(
      np.all(radius >= geometry.probe_radius_mm + min_depth_mm) and
      np.all(radius <= geometry.max_radius_mm - margin_mm) and
      np.all(np.abs(angle) <= geometry.half_angle - lateral_margin))


def _place_spleen(rng, length_mm, height, width, wall_mm):
  """Draws the fan and a pose that keeps the whole spleen inside it.

  Starts from a depth setting a sonographer might choose for this spleen and
  deepens the fan by 10% after every 50 poses that do not fit.
  """
  outline = spleen_outline(rng, length_mm)
  depth = max(rng.uniform(100.0, 170.0), 0.8 * length_mm + wall_mm + 25.0)
  if length_mm < 100.0:
    depth = max(rng.uniform(60.0, 110.0), 0.8 * length_mm + wall_mm + 20.0)
  mirror = rng.random() < 0.5
  # Deepening widens the fan in mm, so a pose fits after a few rounds; the
  # bound only turns a geometry bug into an error instead of a hang.
  for _ in range(40):
    geometry = _make_geometry(rng, height, width, depth)
    for _ in range(50):
      angle = math.radians(rng.uniform(-40.0, 40.0))
      centre_radius = geometry.probe_radius_mm + wall_mm + rng.uniform(
          0.25, 0.75) * (depth - wall_mm)
      centre_angle = rng.uniform(-0.6, 0.6) * geometry.half_angle
      centre = centre_radius * np.array(
          [math.sin(centre_angle), math.cos(centre_angle)])
      polygon = _rotate(outline, angle)
      if mirror:
        polygon = polygon * np.array([-1.0, 1.0])
      polygon = polygon + centre
      if _inside_fan(geometry, polygon, wall_mm + 3.0, 3.0):
        return geometry, polygon, angle, mirror
    depth *= 1.1
  raise RuntimeError(
      f"No pose of a {length_mm:.0f} mm spleen fits a fan {depth:.0f} mm "
      "deep: the phantom's placement rules are inconsistent.")


def _draw_scene(rng: np.random.Generator, height: int, width: int) -> _Scene:
  """Draws every organ of one frame."""
  length = sample_spleen_length_mm(rng)
  size = min(1.0, length / 110.0)  # Body size relative to an adult.
  fat = rng.uniform(2.0, 18.0) * size
  wall = fat + rng.uniform(8.0, 16.0) * size + 2.0
  geometry, spleen, spleen_angle, mirror = _place_spleen(
      rng, length, height, width, wall)
  frequency = rng.uniform(2.5, 3.5) if size >= 1.0 else rng.uniform(3.5, 5.0)

  # Directions of the spleen in the frame: along its long axis, and from the
  # hilum (concave side) towards the diaphragm (convex side).
  axis = _rotate(np.array([[1.0, 0.0]]), spleen_angle)[0]
  outward = _rotate(np.array([[0.0, -1.0]]), spleen_angle)[0]
  if mirror:
    axis, outward = axis * [-1, 1], outward * [-1, 1]
  centre = spleen.mean(axis=0)
  extent = np.ptp(spleen @ np.stack([axis, outward], 1), axis=0)

  # Painted in order: unlabelled bands first, so that organs cover them, and
  # the spleen last, so that its label is the whole drawn outline.
  shapes = _draw_streaks(rng, geometry, wall)
  shapes += _draw_diaphragm(rng, spleen, outward)
  if rng.random() < 0.4:
    shapes += _draw_liver(rng, geometry, wall, size)
  if rng.random() < 0.65:
    shapes += _draw_kidney(rng, centre, axis, outward, extent, size)
  shapes += _draw_vessels(rng, geometry, wall, centre, axis, outward, extent,
                          size)
  shapes += _draw_ribs(rng, geometry, fat, wall, size)
  shapes.append((Tissue.SPLEEN, SPLEEN, spleen))
  return _Scene(geometry=geometry, wall_mm=wall, fat_mm=fat, shapes=shapes,
                spleen=spleen, spleen_length_mm=length,
                frequency_mhz=frequency)


def _draw_kidney(rng, spleen_centre, axis, outward, extent, size):
  """Returns the kidney below the spleen's hilum: cortex, sinus, pyramids."""
  length = rng.uniform(95.0, 120.0) * size
  semi_axes = (length / 2, length * rng.uniform(0.2, 0.27))
  centre = (spleen_centre - outward * (
      extent[1] / 2 + semi_axes[1] * rng.uniform(1.0, 1.5)) +
            axis * rng.uniform(-0.3, 0.3) * extent[0])
  angle = math.atan2(axis[1], axis[0]) + math.radians(rng.uniform(-25, 25))
  shapes = [(Tissue.KIDNEY_CORTEX, KIDNEY,
             _ellipse(centre, semi_axes, angle))]
  for _ in range(rng.integers(4, 8)):
    along = rng.uniform(-0.6, 0.6)
    side = rng.choice([-1.0, 1.0])
    local = np.array([[along * semi_axes[0],
                       side * 0.55 * semi_axes[1] * math.sqrt(1 - along**2)]])
    shapes.append((Tissue.KIDNEY_PYRAMID, KIDNEY, _ellipse(
        _rotate(local, angle)[0] + centre,
        (semi_axes[1] * 0.25, semi_axes[1] * 0.18),
        angle + rng.uniform(-0.5, 0.5), 32)))
  sinus = _ellipse((0, 0), (semi_axes[0] * 0.6, semi_axes[1] * 0.4), 0.0)
  sinus *= 1.0 + 0.12 * np.sin(np.linspace(0, 10 * np.pi, len(sinus)))[:, None]
  shapes.append((Tissue.KIDNEY_SINUS, KIDNEY, _rotate(sinus, angle) + centre))
  return shapes


def _draw_liver(rng, geometry, wall, size):
  """Returns the thin edge of the left liver lobe entering from one side."""
  side = rng.choice([-1.0, 1.0])
  radius = geometry.probe_radius_mm + wall + rng.uniform(
      0.0, 0.4) * geometry.depth_mm
  angle = side * geometry.half_angle * rng.uniform(1.1, 1.6)
  semi_axes = (rng.uniform(60.0, 120.0) * size, rng.uniform(15.0, 35.0) * size)
  centre = radius * np.array([math.sin(angle), math.cos(angle)])
  tilt = rng.uniform(-0.4, 0.4)
  liver = _ellipse(centre, semi_axes, tilt, 128)
  return [(Tissue.LIVER, LIVER, liver)]


def _draw_vessels(rng, geometry, wall, spleen_centre, axis, outward, extent,
                  size):
  """Returns the splenic vein at the hilum and vessels in cross-section."""
  shapes = []
  if rng.random() < 0.7:
    radius = rng.uniform(2.5, 5.0) * size
    start = (spleen_centre - outward * extent[1] * rng.uniform(0.3, 0.6) +
             axis * rng.uniform(-0.2, 0.2) * extent[0])
    direction = math.atan2(-outward[1], -outward[0]) + rng.uniform(-1.0, 1.0)
    path = _smooth_curve(rng, start, direction, rng.uniform(20.0, 50.0) * size,
                         rng.uniform(-0.8, 0.8))
    shapes.append((Tissue.VESSEL_WALL, VESSELS, _tube(path, radius + 0.8)))
    shapes.append((Tissue.VESSEL_LUMEN, VESSELS, _tube(path, radius)))

  for _ in range(rng.integers(0, 3)):
    radius_mm = geometry.probe_radius_mm + wall + rng.uniform(
        0.1, 0.95) * (geometry.depth_mm - wall)
    angle = rng.uniform(-1.0, 1.0) * geometry.half_angle
    centre = radius_mm * np.array([math.sin(angle), math.cos(angle)])
    semi_axes = np.array([rng.uniform(1.5, 6.0)] * 2) * size
    semi_axes[0] *= rng.uniform(1.0, 2.5)
    tilt = rng.uniform(0, np.pi)
    shapes.append((Tissue.VESSEL_WALL, VESSELS,
                   _ellipse(centre, semi_axes + 0.8, tilt, 48)))
    shapes.append((Tissue.VESSEL_LUMEN, VESSELS,
                   _ellipse(centre, semi_axes, tilt, 48)))
  return shapes


def _draw_diaphragm(rng, spleen, outward):
  """Returns a bright band along the spleen's convex side, past its poles."""
  projection = (spleen - spleen.mean(0)) @ outward
  # The convex side is the first half of the outline (see spleen_outline).
  half = len(spleen) // 2
  edge = spleen[:half] if projection[:half].mean() > projection[half:].mean(
  ) else spleen[half:]
  edge = edge + outward * rng.uniform(1.5, 4.0)
  reach = rng.uniform(10.0, 30.0)
  for end, step in ((0, edge[0] - edge[3]), (-1, edge[-1] - edge[-4])):
    step = step / np.linalg.norm(step)
    extension = edge[end] + step * np.linspace(0, reach, 8)[1:, None]
    edge = (np.concatenate([extension[::-1], edge]) if end == 0 else
            np.concatenate([edge, extension]))
  return [(Tissue.DIAPHRAGM, 0, _tube(edge, rng.uniform(0.8, 1.6)))]


def _draw_ribs(rng, geometry, fat, wall, size):
  """Returns 0 to 2 rib cross-sections, deep in the body wall but inside it."""
  shapes = []
  count = rng.choice([0, 1, 2], p=[0.5, 0.35, 0.15])
  spacing = rng.uniform(18.0, 28.0) * size
  # The probe sits between two ribs, so ribs show near the fan's sides.
  first = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.2) * (
      geometry.probe_radius_mm * geometry.half_angle)
  for index in range(count):
    arc = first + index * spacing * (1 if first < 0 else -1)
    room = wall - fat - 1.0
    semi_axes = (rng.uniform(5.0, 7.0) * size,
                 min(rng.uniform(3.0, 4.5) * size, room / 2))
    radius = geometry.probe_radius_mm + fat + 0.5 + semi_axes[1] + (
        rng.uniform(0.0, 1.0) * max(0.0, room - 2 * semi_axes[1]))
    angle = arc / geometry.probe_radius_mm
    centre = radius * np.array([math.sin(angle), math.cos(angle)])
    shapes.append((Tissue.RIB, BONES, _ellipse(centre, semi_axes, -angle, 48)))
  return shapes


def _draw_streaks(rng, geometry, wall):
  """Returns thin bright fascial planes in the deep background."""
  shapes = []
  for _ in range(rng.integers(4, 13)):
    radius = geometry.probe_radius_mm + wall + rng.uniform(
        0.0, 1.0) * (geometry.depth_mm - wall)
    angle = rng.uniform(-1.0, 1.0) * geometry.half_angle
    start = radius * np.array([math.sin(angle), math.cos(angle)])
    path = _smooth_curve(rng, start, rng.uniform(-0.6, 0.6) + (
        np.pi if rng.random() < 0.5 else 0.0), rng.uniform(15.0, 60.0),
                         rng.uniform(-0.6, 0.6), 20)
    shapes.append((Tissue.STREAK, 0, _tube(path, rng.uniform(0.4, 1.0))))
  return shapes


# ---------------------------------------------------------------------------
# Rasterisation.


def fill_polygon(rows: np.ndarray, cols: np.ndarray,
                 shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Returns the pixels whose centres lie inside a polygon (even-odd rule).

  A scanline fill: for each pixel row, the polygon's edges are cut at the
  row's centre line and the pixels between pairs of crossings are filled.
  An edge covers the half-open span of rows from its lower to its upper end,
  so a vertex on a centre line is counted once. Same contract as
  `skimage.draw.polygon`, but linear in the number of edges per row, which
  is much faster for long outlines with large bounding boxes.

  Args:
    rows, cols: fractional vertex coordinates; pixel `(r, c)` has its centre
      at `(r, c)`.
    shape: `(height, width)`; pixels outside it are dropped.

  Returns:
    Row and column indices of the filled pixels.
  """
  height, width = shape
  first = max(0, math.ceil(rows.min()))
  last = min(height - 1, math.floor(rows.max()))
  if last < first:
    return np.zeros(0, np.intp), np.zeros(0, np.intp)
  centre_lines = np.arange(first, last + 1, dtype=np.float64)[:, None]
  start_rows, end_rows = rows[None, :], np.roll(rows, -1)[None, :]
  start_cols, end_cols = cols[None, :], np.roll(cols, -1)[None, :]
  crosses = (start_rows <= centre_lines) != (end_rows <= centre_lines)
  # Edges that do not cross a line (horizontal ones included) get inf.
  with np.errstate(divide="ignore", invalid="ignore"):
    fraction = (centre_lines - start_rows) / (end_rows - start_rows)
    crossing_cols = np.where(crosses, start_cols + fraction * (
        end_cols - start_cols), np.inf)
  crossing_cols.sort(axis=1)
  if crossing_cols.shape[1] % 2:
    crossing_cols = np.pad(crossing_cols, [(0, 0), (0, 1)],
                           constant_values=np.inf)

  # Fill column spans [ceil(left), ceil(right)) through a difference array.
  left, right = crossing_cols[:, 0::2], crossing_cols[:, 1::2]
  pairs = np.isfinite(left) & np.isfinite(right)
  line_index = np.broadcast_to(np.arange(len(centre_lines))[:, None],
                               left.shape)[pairs]
  begin = np.clip(np.ceil(left[pairs]), 0, width).astype(np.intp)
  end = np.clip(np.ceil(right[pairs]), 0, width).astype(np.intp)
  difference = np.zeros((len(centre_lines), width + 1), np.int32)
  np.add.at(difference, (line_index, begin), 1)
  np.add.at(difference, (line_index, end), -1)
  filled_rows, filled_cols = np.nonzero(np.cumsum(difference, axis=1)[:, :-1])
  return filled_rows + first, filled_cols


def _rasterize(scene: _Scene, radius: np.ndarray, sector: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
  """Paints the scene into tissue-class and label maps at pixel centres.

  Organs are clipped to the fan and to depths below the body wall; ribs may
  lie in the body wall.
  """
  geometry = scene.geometry
  shape = (geometry.height, geometry.width)
  tissue = np.zeros(shape, np.uint8)
  label = np.zeros(shape, np.uint8)
  below_wall = radius >= geometry.probe_radius_mm + scene.wall_mm
  for tissue_class, legend_id, polygon in scene.shapes:
    rows, cols = geometry.to_pixels(polygon)
    fill_rows, fill_cols = fill_polygon(rows, cols, shape)
    allowed = sector[fill_rows, fill_cols]
    if tissue_class != Tissue.RIB:
      allowed &= below_wall[fill_rows, fill_cols]
    fill_rows, fill_cols = fill_rows[allowed], fill_cols[allowed]
    tissue[fill_rows, fill_cols] = tissue_class
    label[fill_rows, fill_cols] = legend_id
  return tissue, label


def _body_wall(rng, scene: _Scene, depth_mm: np.ndarray,
               angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Draws the layered body wall on the polar grid.

  Skin, subcutaneous fat, then muscle bundles of random brightness separated
  by fascia, all following the probe surface with a gentle undulation.

  Returns:
    The tissue class of each sample (`Tissue.BACKGROUND` below the wall) and
    a factor on the echogenicity of each sample (1 below the wall).
  """
  undulation = np.zeros_like(angle[0])
  for harmonic in range(1, 4):
    undulation += rng.uniform(0, 1.0) * np.sin(
        harmonic * angle[0] * 6 + rng.uniform(0, 2 * np.pi))
  depth = depth_mm + undulation[None, :]
  classes = np.full(depth.shape, Tissue.BACKGROUND, np.uint8)
  classes[depth < scene.wall_mm] = Tissue.MUSCLE
  classes[depth < scene.fat_mm] = Tissue.FAT
  classes[depth < 1.5] = Tissue.SKIN

  # Bundles: split the wall below the fat into layers of random brightness.
  gain = np.ones(depth.shape, np.float32)
  edges = np.sort(rng.uniform(scene.fat_mm, scene.wall_mm,
                              rng.integers(0, 3)))
  edges = np.concatenate([[0.0], edges, [scene.wall_mm]])
  for top, bottom in zip(edges[:-1], edges[1:]):
    layer = (depth >= top) & (depth < bottom)
    gain[layer] = math.exp(rng.normal(0.6, 0.5))

  # Fascia: the deep edge of the fat, septa in the fat, bundle edges, and
  # the peritoneum at the deep edge of the wall.
  lines = [scene.fat_mm, scene.wall_mm - 0.8, *edges[1:-1]]
  lines += list(rng.uniform(1.5, scene.fat_mm, rng.integers(0, 2)))
  for line in lines:
    thickness = rng.uniform(0.8, 2.5)
    tilt = rng.uniform(-2.0, 2.0) * angle
    fascia = np.abs(depth - line + tilt) < thickness / 2
    classes[fascia] = Tissue.FASCIA
    gain[fascia] = math.exp(rng.normal(-0.3, 0.5))
  return classes, gain


# ---------------------------------------------------------------------------
# Acoustics.


@dataclasses.dataclass(frozen=True)
class PointSpreadFunction:
  """Gaussian point spread function on the polar grid, in samples.

  The echo of a point scatterer is a Gaussian pulse envelope along the beam
  times a Gaussian beam profile across beams, modulated at the centre
  frequency. After quadrature demodulation only the envelope is left, and
  the carrier phase `2 k z` of a scatterer at depth `z` becomes part of its
  complex amplitude. Convolving complex amplitudes with the Gaussian envelope
  is therefore the baseband (IQ) form of convolving RF scatterers with the
  modulated pulse.
  """

  axial_sigma: float
  lateral_sigma: float

  def kernel(self) -> np.ndarray:
    axial = np.arange(-math.ceil(3 * self.axial_sigma),
                      math.ceil(3 * self.axial_sigma) + 1)
    lateral = np.arange(-math.ceil(3 * self.lateral_sigma),
                        math.ceil(3 * self.lateral_sigma) + 1)
    kernel = np.exp(-0.5 * (axial[:, None] / self.axial_sigma)**2 -
                    0.5 * (lateral[None, :] / self.lateral_sigma)**2)
    return kernel / np.sqrt((kernel**2).sum())


def scatterer_counts(rng: np.random.Generator, shape: tuple[int, ...],
                     scatterers_per_sample: float = 4.0) -> np.ndarray:
  """Draws the Poisson number of point scatterers in each grid sample."""
  return rng.poisson(scatterers_per_sample, shape).astype(np.float32) / (
      scatterers_per_sample)


def scatterer_amplitudes(rng: np.random.Generator, echogenicity: np.ndarray,
                         relative_counts: np.ndarray) -> np.ndarray:
  """Draws the summed complex amplitude of the point scatterers of each sample.

  Each scatterer has an independent circular complex Gaussian amplitude, so
  the sum over the `n` scatterers of a sample is complex Gaussian with
  variance `n`. `relative_counts` is `n` over its mean (see
  `scatterer_counts`), which makes the expected intensity `echogenicity`.
  """
  scale = np.sqrt(0.5 * echogenicity * relative_counts)
  noise = rng.standard_normal((2, *echogenicity.shape), np.float32)
  return scale * (noise[0] + 1j * noise[1])


def speckle_envelope(rng: np.random.Generator, echogenicity: np.ndarray,
                     psf: PointSpreadFunction,
                     scatterers_per_sample: float = 4.0) -> np.ndarray:
  """Simulates the envelope of the echo of a scattering medium.

  Args:
    rng: source of the scatterers.
    echogenicity: `[depth samples, beams]` mean backscattered intensity.
    psf: the point spread function, in samples of that grid.
    scatterers_per_sample: mean number of point scatterers per grid sample.

  Returns:
    `[depth samples, beams]` float32 envelope (magnitude of the IQ signal),
    before attenuation, gain or compression. With several scatterers per
    resolution cell its values are Rayleigh distributed, so mean / std is
    close to `RAYLEIGH_SNR`.
  """
  counts = scatterer_counts(rng, echogenicity.shape, scatterers_per_sample)
  amplitudes = scatterer_amplitudes(rng, echogenicity, counts)
  return np.abs(_convolve(amplitudes, psf)).astype(np.float32)


def _convolve(amplitudes: np.ndarray, psf: PointSpreadFunction) -> np.ndarray:
  return signal.fftconvolve(amplitudes, psf.kernel().astype(np.float32),
                            mode="same")


def _lookup(table: dict[int, float], classes: np.ndarray) -> np.ndarray:
  values = np.zeros(Tissue.COUNT, np.float32)
  for tissue_class, value in table.items():
    values[tissue_class] = value
  return values[classes]


@dataclasses.dataclass(frozen=True)
class _PolarGrid:
  """Sample radii (mm) and beam angles (radians) of the polar grid."""

  radii: np.ndarray
  angles: np.ndarray

  @property
  def sample_step_mm(self) -> float:
    return float(self.radii[1] - self.radii[0])

  @property
  def beam_step(self) -> float:
    return float(self.angles[1] - self.angles[0])

  def mesh(self) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(self.radii, self.angles, indexing="ij")


def _make_polar_grid(geometry: ScanGeometry) -> _PolarGrid:
  """Spaces samples and beams about one pixel apart at mid-depth."""
  num_samples = int(round(geometry.depth_mm / geometry.spacing_mm))
  mid_radius = geometry.probe_radius_mm + geometry.depth_mm / 2
  num_beams = int(round(2 * geometry.half_angle * mid_radius /
                        geometry.spacing_mm))
  sample_step = geometry.depth_mm / num_samples
  beam_step = 2 * geometry.half_angle / num_beams
  radii = geometry.probe_radius_mm + (np.arange(num_samples) + 0.5) * (
      sample_step)
  angles = -geometry.half_angle + (np.arange(num_beams) + 0.5) * beam_step
  return _PolarGrid(radii.astype(np.float32), angles.astype(np.float32))


def _polar_tissue(rng, scene: _Scene, tissue_map: np.ndarray,
                  grid: _PolarGrid) -> tuple[np.ndarray, np.ndarray]:
  """Looks up the tissue class of each polar sample: organs, else body wall.

  Returns:
    The classes and a factor on their echogenicity (see `_body_wall`).
  """
  geometry = scene.geometry
  radius, angle = grid.mesh()
  rows = np.rint(geometry.apex_row + radius * np.cos(angle) /
                 geometry.spacing_mm).astype(np.int32)
  cols = np.rint(geometry.apex_col + radius * np.sin(angle) /
                 geometry.spacing_mm).astype(np.int32)
  classes = tissue_map[np.clip(rows, 0, geometry.height - 1),
                       np.clip(cols, 0, geometry.width - 1)]
  wall, gain = _body_wall(rng, scene, radius - geometry.probe_radius_mm,
                          angle)
  organs = classes != Tissue.BACKGROUND
  return np.where(organs, classes, wall), np.where(organs, 1.0, gain)


def _echogenicity(rng, classes: np.ndarray, grid: _PolarGrid) -> np.ndarray:
  """Draws per-frame tissue contrasts and a smooth texture of the background.

  Organs are nearly homogeneous. The background and body wall get log-normal
  textures at two scales, elongated across the beams, like fat planes,
  muscle fibres and bowel loops in real scans.
  """
  contrast = {k: v.echogenicity * math.exp(rng.normal(0.0, 0.25))
              for k, v in TISSUES.items()}
  echogenicity = _lookup(contrast, classes)
  fine = _smooth_noise(rng, grid, (1.5, 5.0))
  coarse = _smooth_noise(rng, grid, (6.0, 15.0))
  fine_strength = _lookup({
      Tissue.BACKGROUND: rng.uniform(0.5, 0.9), Tissue.MUSCLE: 0.7,
      Tissue.FAT: 0.6, Tissue.DIAPHRAGM: 0.6, Tissue.STREAK: 0.6,
      Tissue.LIVER: 0.12, Tissue.SPLEEN: 0.08, Tissue.KIDNEY_CORTEX: 0.1,
      Tissue.KIDNEY_SINUS: 0.3}, classes)
  coarse_strength = _lookup({Tissue.BACKGROUND: rng.uniform(0.3, 0.7)},
                            classes)
  return echogenicity * np.exp(fine_strength * fine +
                               coarse_strength * coarse)


def _smooth_noise(rng, grid: _PolarGrid,
                  sigma_mm: tuple[float, float]) -> np.ndarray:
  """Returns unit-variance Gaussian noise smoothed by (axial, lateral) mm."""
  mid_radius = float(grid.radii[len(grid.radii) // 2])
  noise = ndimage.gaussian_filter(
      rng.standard_normal((len(grid.radii), len(grid.angles)), np.float32),
      sigma=(sigma_mm[0] / grid.sample_step_mm,
             sigma_mm[1] / (mid_radius * grid.beam_step)))
  return noise / (noise.std() + 1e-6)


def _transmission(scene: _Scene, classes: np.ndarray,
                  grid: _PolarGrid) -> np.ndarray:
  """Returns the round-trip amplitude transmission to each sample.

  Attenuation accumulates along each beam, so bone behind the skin casts a
  shadow and a vessel brightens what lies behind it. The transmit beam's
  width blurs the shadow's edges across beams.
  """
  attenuation = _lookup(
      {k: v.attenuation_db_per_cm_mhz for k, v in TISSUES.items()}, classes)
  loss_db = 2.0 * scene.frequency_mhz * np.cumsum(
      attenuation, axis=0) * grid.sample_step_mm / 10.0
  transmission = np.power(10.0, -loss_db / 20.0).astype(np.float32)
  beam_width_mm = 2.0
  return ndimage.gaussian_filter1d(
      transmission, beam_width_mm / (grid.radii[:, None].mean() *
                                     grid.beam_step), axis=1)


def _specular_amplitude(rng, classes: np.ndarray,
                        grid: _PolarGrid) -> np.ndarray:
  """Returns the amplitude of specular echoes at impedance steps.

  The amplitude grows with the step in impedance along the beam and with
  cos^2 of the angle between beam and interface normal, since an oblique
  interface reflects the pulse away from the probe. Normals come from the
  gradient of the lightly smoothed impedance map, in mm.
  """
  impedance = _lookup({k: v.impedance for k, v in TISSUES.items()}, classes)
  smooth = ndimage.gaussian_filter(impedance, 1.0)
  mid_radius = float(grid.radii[len(grid.radii) // 2])
  axial = np.gradient(smooth, axis=0) / grid.sample_step_mm
  lateral = np.gradient(smooth, axis=1) / (mid_radius * grid.beam_step)
  incidence = axial**2 / (axial**2 + lateral**2 + 1e-12)
  step = np.abs(np.diff(impedance, axis=0, prepend=impedance[:1]))
  return rng.uniform(12.0, 25.0) * step * incidence * np.exp(
      0.3 * rng.standard_normal(step.shape).astype(np.float32))


def _echo_envelope(rng, scene: _Scene, classes: np.ndarray,
                   wall_gain: np.ndarray, grid: _PolarGrid) -> np.ndarray:
  """Simulates the detected echo envelope, before the scanner's gain.

  The envelope is the magnitude of the demodulated (IQ) signal: diffuse
  scatterers plus specular echoes, attenuated, convolved with the PSF, plus
  receiver noise. Spatial compounding is modelled as the mean envelope of
  `looks` independent scatterer draws, which lowers the speckle contrast as
  on scanners that steer several beams per line. The specular echoes and the
  scatterer counts are the same in every look, and only the scatterers'
  phases change.
  """
  echogenicity = _echogenicity(rng, classes, grid) * wall_gain
  transmission = _transmission(scene, classes, grid)

  specular = _specular_amplitude(rng, classes, grid)

  wavelength_mm = SPEED_OF_SOUND_M_PER_S / (scene.frequency_mhz * 1e3)
  mid_radius = float(grid.radii.mean())
  psf = PointSpreadFunction(
      axial_sigma=rng.uniform(1.0, 1.5) * wavelength_mm / grid.sample_step_mm,
      lateral_sigma=rng.uniform(2.5, 3.5) * wavelength_mm / (
          mid_radius * grid.beam_step))
  coherent = _convolve(specular * transmission, psf)
  noise_level = 10.0**rng.uniform(-4.0, -3.3)
  counts = scatterer_counts(rng, classes.shape)
  looks = 3
  envelope = np.zeros(classes.shape, np.float32)
  for _ in range(looks):
    iq = coherent + _convolve(
        scatterer_amplitudes(rng, echogenicity, counts) * transmission, psf)
    noise = rng.standard_normal((2, *iq.shape), np.float32)
    envelope += np.abs(iq + noise_level * (noise[0] + 1j * noise[1]))
  return envelope / looks


def _display(rng, scene: _Scene, envelope: np.ndarray,
             grid: _PolarGrid) -> np.ndarray:
  """Applies the scanner's gain and log compression; returns gray in [0, 255].

  Time-gain compensation makes up for the background's attenuation except
  for 6 to 20 dB at the deepest sample. It also lifts the first centimetres
  by up to 8 dB. So the near field is bright and the far field darker, as on
  real scans.
  A mild smoothing of the compressed image stands in for the scanner's
  speckle reduction.
  """
  radius, angle = grid.mesh()
  depth_cm = (radius - scene.geometry.probe_radius_mm) / 10.0
  background_loss_db = 2.0 * scene.frequency_mhz * (
      TISSUES[Tissue.BACKGROUND].attenuation_db_per_cm_mhz) * depth_cm
  residual_db = rng.uniform(6.0, 20.0) * depth_cm / depth_cm.max()
  near_field_db = rng.uniform(2.0, 8.0) * np.exp(
      -10.0 * depth_cm / rng.uniform(15.0, 30.0))
  compensated_db = background_loss_db - residual_db + near_field_db
  envelope = envelope * np.power(10.0, compensated_db / 20.0)

  # Fan edges are dimmer; poor skin contact darkens one side of the probe.
  edge = np.abs(angle) / scene.geometry.half_angle
  envelope *= 1.0 - rng.uniform(0.2, 0.5) * np.clip((edge - 0.7) / 0.3, 0, 1)
  if rng.random() < 0.25:
    side = rng.choice([-1.0, 1.0])
    position = side * angle / scene.geometry.half_angle
    envelope *= np.clip(1.0 - 2.0 * (position - rng.uniform(0.2, 0.7)),
                        0.03, 1.0)

  dynamic_range_db = rng.uniform(48.0, 58.0)
  reference = math.sqrt(TISSUES[Tissue.BACKGROUND].echogenicity) * 10.0**(
      rng.uniform(18.0, 27.0) / 20.0)
  decibels = 20.0 * np.log10(np.maximum(envelope, 1e-12) / reference)
  gray = np.clip((decibels + dynamic_range_db) / dynamic_range_db, 0.0, 1.0)
  gray = ndimage.gaussian_filter(gray, (rng.uniform(0.8, 1.2),
                                        rng.uniform(1.0, 2.0)))
  return 255.0 * gray**rng.uniform(1.2, 1.8)


def _scan_convert(polar_image, grid: _PolarGrid, radius, angle, sector):
  """Samples the polar image at every pixel of the fan (bilinear)."""
  row_index = (radius - grid.radii[0]) / grid.sample_step_mm
  col_index = (angle - grid.angles[0]) / grid.beam_step
  image = np.zeros(radius.shape, np.float32)
  image[sector] = ndimage.map_coordinates(
      polar_image.astype(np.float32),
      [row_index[sector], col_index[sector]], order=1, mode="nearest")
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def simulate_frame(seed, height: int = 480, width: int = 640) -> PhantomFrame:
  """Simulates one frame with its label map and spleen length.

  Args:
    seed: anything `numpy.random.default_rng` accepts, e.g. `(7, 12)`; the
      same seed and size always give the same frame.
    height: frame height in pixels.
    width: frame width in pixels.
  """
  if height < 32 or width < 32:
    raise ValueError(f"Frame size {height}x{width} is too small: use at least "
                     "32x32 pixels.")
  rng = np.random.default_rng(seed)
  scene = _draw_scene(rng, height, width)
  geometry = scene.geometry
  radius, angle = geometry.pixel_polar()
  sector = geometry.contains(radius, angle)

  tissue_map, label = _rasterize(scene, radius, sector)
  grid = _make_polar_grid(geometry)
  classes, wall_gain = _polar_tissue(rng, scene, tissue_map, grid)
  envelope = _echo_envelope(rng, scene, classes, wall_gain, grid)
  polar_image = _display(rng, scene, envelope, grid)
  image = _scan_convert(polar_image, grid, radius, angle, sector)

  spacing = np.array([geometry.spacing_mm] * 2, np.float32)
  return PhantomFrame(
      image=image, label=label, sector=sector, pixel_spacing_mm=spacing,
      spleen_length_mm=feret_diameter_mm(label == SPLEEN, spacing),
      spleen_outline_length_mm=scene.spleen_length_mm, geometry=geometry)
