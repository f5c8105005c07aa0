"""Writes small uncompressed ultrasound DICOM files for the tests."""

import pathlib
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom import pixels as pydicom_pixels
from pydicom import uid


def ultrasound_region(bounds: tuple[int, int, int, int], delta_cm: float,
                      delta_y_cm: float | None = None,
                      units: int = 3) -> Dataset:
  """An item of the Sequence of Ultrasound Regions.

  Args:
    bounds: `(min_x, min_y, max_x, max_y)`, inclusive pixel positions.
    delta_cm: Physical Delta X, and Y unless `delta_y_cm` is given.
    delta_y_cm: Physical Delta Y.
    units: Physical Units X/Y Direction; 3 is cm.
  """
  region = Dataset()
  region.RegionSpatialFormat = 1
  region.RegionDataType = 1
  region.RegionFlags = 0
  (region.RegionLocationMinX0, region.RegionLocationMinY0,
   region.RegionLocationMaxX1, region.RegionLocationMaxY1) = bounds
  region.PhysicalUnitsXDirection = units
  region.PhysicalUnitsYDirection = units
  region.PhysicalDeltaX = delta_cm
  region.PhysicalDeltaY = delta_cm if delta_y_cm is None else delta_y_cm
  return region


def write_dicom(path: pathlib.Path, frames: Sequence[np.ndarray], *,
                photometric: str = "MONOCHROME2",
                regions: Sequence[Dataset] = (),
                pixel_spacing: tuple[float, float] | None = None,
                with_pixels: bool = True) -> pathlib.Path:
  """Writes frames as an Explicit VR Little Endian ultrasound file.

  Args:
    path: the file to write.
    frames: `[h, w]` uint8 or uint16 grayscale frames, or `[h, w, 3]` uint8
      RGB frames. RGB frames are stored as `photometric`: RGB, or YBR_FULL
      after pydicom's `convert_color_space`.
    photometric: Photometric Interpretation of the stored pixels.
    regions: items of the Sequence of Ultrasound Regions.
    pixel_spacing: Pixel Spacing `(row, column)` in mm.
    with_pixels: False leaves out Pixel Data.
  """
  stack = np.stack(frames)
  multi_frame = len(frames) > 1
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = (
      uid.UltrasoundMultiFrameImageStorage if multi_frame
      else uid.UltrasoundImageStorage)
  meta.MediaStorageSOPInstanceUID = uid.generate_uid()
  meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian

  dataset = Dataset()
  dataset.file_meta = meta
  dataset.SOPClassUID = meta.MediaStorageSOPClassUID
  dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  dataset.Modality = "US"
  dataset.Rows, dataset.Columns = stack.shape[1:3]
  if stack.ndim == 4:
    dataset.SamplesPerPixel = 3
    dataset.PlanarConfiguration = 0
  else:
    dataset.SamplesPerPixel = 1
  dataset.PhotometricInterpretation = photometric
  bits = 16 if stack.dtype == np.uint16 else 8
  dataset.BitsAllocated = bits
  dataset.BitsStored = bits
  dataset.HighBit = bits - 1
  dataset.PixelRepresentation = 0
  if multi_frame:
    dataset.NumberOfFrames = len(frames)
  if regions:
    dataset.SequenceOfUltrasoundRegions = list(regions)
  if pixel_spacing is not None:
    dataset.PixelSpacing = list(pixel_spacing)

  if with_pixels:
    if photometric == "YBR_FULL":
      stack = pydicom_pixels.convert_color_space(stack, "RGB", "YBR_FULL")
    dataset.PixelData = np.ascontiguousarray(stack).tobytes()
  pydicom.dcmwrite(path, dataset, enforce_file_format=True)
  return path
