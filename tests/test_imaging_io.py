"""Reading prediction inputs: image formats, DICOM, pixel spacing, bad files."""

import pathlib

import numpy as np
from PIL import Image
import pydicom
import pydicom.data
import pytest

import dicom_builder
from spleen_jax.data import imaging_io


@pytest.fixture(scope="module")
def frame(shared_data_dir) -> np.ndarray:
  """A real 480x640 grayscale frame, read as the training data was."""
  path = shared_data_dir / "abdominal_US/RUS/images/test/b26.jpg"
  with Image.open(path) as image:
    return np.asarray(image.convert("L"))


def _read_one(path: pathlib.Path) -> imaging_io.Frame:
  frames = list(imaging_io.read_frames(path))
  assert len(frames) == 1
  return frames[0]


def _colour(frame: np.ndarray) -> np.ndarray:
  """An RGB image whose channels differ, so that the luma formula matters."""
  return np.stack([frame, frame // 2, 255 - frame], axis=-1).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
  return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))


# Image formats.


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_8_bit_grayscale_read_exactly(frame, tmp_path, suffix):
  path = tmp_path / f"frame{suffix}"
  Image.fromarray(frame).save(path)
  result = _read_one(path)
  assert result.pixels.dtype == np.uint8
  np.testing.assert_array_equal(result.pixels, frame)
  assert (result.index, result.num_frames) == (0, 1)


def test_jpeg_read_like_training(frame, tmp_path):
  path = tmp_path / "frame.jpg"
  Image.fromarray(frame).save(path, quality=90)
  with Image.open(path) as image:
    expected = np.asarray(image.convert("L"))
  result = _read_one(path)
  np.testing.assert_array_equal(result.pixels, expected)
  assert np.abs(result.pixels.astype(int) - frame).mean() < 2


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_scaled_by_frame_range(frame, tmp_path, suffix):
  # 12-bit data in a 16-bit file: 16 * frame spans 0..16 * max.
  path = tmp_path / f"frame16{suffix}"
  Image.fromarray(frame.astype(np.uint16) * 16).save(path)
  result = _read_one(path)
  assert result.pixels.dtype == np.uint8
  np.testing.assert_array_equal(result.pixels,
                                imaging_io.scale_to_uint8(frame))
  assert result.pixels.max() == 255
  assert "scaled" in result.conversion


def test_rgb_converted_with_luma(frame, tmp_path):
  rgb = _colour(frame)
  path = tmp_path / "rgb.png"
  Image.fromarray(rgb, "RGB").save(path)
  np.testing.assert_array_equal(_read_one(path).pixels, _luma(rgb))


def test_rgba_ignores_alpha(frame, tmp_path):
  rgb = _colour(frame)
  alpha = np.full(frame.shape, 255, np.uint8)
  alpha[:, :320] = 10
  path = tmp_path / "rgba.png"
  Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
  np.testing.assert_array_equal(_read_one(path).pixels, _luma(rgb))


def test_palette_converted_through_palette(frame, tmp_path):
  image = Image.fromarray(frame, "P")
  # A reversed gray ramp: index i shows gray 255 - i.
  image.putpalette([255 - i for i in range(256) for _ in range(3)])
  path = tmp_path / "palette.png"
  image.save(path)
  np.testing.assert_array_equal(_read_one(path).pixels, 255 - frame)


def test_multi_page_tiff_yields_each_page(frame, tmp_path):
  path = tmp_path / "pages.tif"
  first = Image.fromarray(frame)
  first.save(path, save_all=True, append_images=[Image.fromarray(frame.T)])
  frames = list(imaging_io.read_frames(path))
  assert [f.index for f in frames] == [0, 1]
  assert all(f.num_frames == 2 for f in frames)
  np.testing.assert_array_equal(frames[1].pixels, frame.T)


# DICOM built from the real frame.


def test_dicom_monochrome_with_ultrasound_regions(frame, tmp_path):
  path = dicom_builder.write_dicom(
      tmp_path / "us.dcm", [frame],
      regions=[dicom_builder.ultrasound_region((0, 0, 639, 479), 0.03)])
  result = _read_one(path)
  np.testing.assert_array_equal(result.pixels, frame)
  assert len(result.regions) == 1
  assert result.regions[0].delta_x_mm == pytest.approx(0.3)
  assert result.regions[0].delta_y_mm == pytest.approx(0.3)


def test_dicom_multi_frame_ybr_full(frame, tmp_path):
  rgb = _colour(frame)
  frames = [rgb, rgb[::-1].copy(), rgb[:, ::-1].copy()]
  path = dicom_builder.write_dicom(
      tmp_path / "cine.dcm", frames, photometric="YBR_FULL",
      regions=[dicom_builder.ultrasound_region((0, 0, 639, 479), 0.025)])
  results = list(imaging_io.read_frames(path))
  assert [r.index for r in results] == [0, 1, 2]
  assert all(r.num_frames == 3 for r in results)
  for result, expected in zip(results, frames):
    # YBR_FULL rounds each channel to 8 bits, so allow one level.
    assert np.abs(result.pixels.astype(int) - _luma(expected)).max() <= 1
  assert "YBR_FULL to RGB" in results[0].conversion
  assert results[0].regions[0].delta_x_mm == pytest.approx(0.25)


def test_dicom_16_bit_scaled(frame, tmp_path):
  path = dicom_builder.write_dicom(tmp_path / "deep.dcm",
                                   [frame.astype(np.uint16) * 16])
  np.testing.assert_array_equal(_read_one(path).pixels,
                                imaging_io.scale_to_uint8(frame))


def test_dicom_monochrome1_inverted(frame, tmp_path):
  path = dicom_builder.write_dicom(tmp_path / "inverse.dcm", [frame],
                                   photometric="MONOCHROME1")
  np.testing.assert_array_equal(_read_one(path).pixels, 255 - frame)


def test_dicom_without_suffix_found_by_preamble(frame, tmp_path):
  path = dicom_builder.write_dicom(tmp_path / "IM0001", [frame])
  assert imaging_io.is_dicom(path)
  np.testing.assert_array_equal(_read_one(path).pixels, frame)


# Pixel spacing.


def _frame_with(regions=(), pixel_spacing=None, shape=(100, 200)):
  return imaging_io.Frame(
      pixels=np.zeros(shape, np.uint8), path=pathlib.Path("x.dcm"), index=0,
      num_frames=1, conversion="", regions=tuple(regions),
      pixel_spacing_mm=pixel_spacing)


def _region(bounds, delta_mm):
  return imaging_io.UltrasoundRegion(*bounds, delta_x_mm=delta_mm,
                                     delta_y_mm=delta_mm)


def test_spacing_from_region_holding_mask():
  left = _region((0, 0, 99, 99), 0.2)
  right = _region((100, 0, 199, 99), 0.5)
  frame = _frame_with([left, right])
  mask = np.zeros((100, 200), bool)
  mask[40:60, 120:180] = True
  spacing = imaging_io.resolve_spacing(frame, mask, (0.9, 0.9))
  assert spacing == imaging_io.Spacing(0.5, 0.5, "ultrasound_regions")

  # Mostly in the left region: the left one wins.
  mask[:, 20:110] = True
  assert imaging_io.resolve_spacing(frame, mask, None).row_mm == 0.2


def test_spacing_falls_back_to_largest_region():
  small = _region((0, 0, 9, 9), 0.2)
  large = _region((50, 0, 199, 99), 0.4)
  frame = _frame_with([small, large])
  empty = np.zeros((100, 200), bool)
  assert imaging_io.resolve_spacing(frame, empty, None).row_mm == 0.4
  outside = np.zeros((100, 200), bool)
  outside[50:60, 20:40] = True
  assert imaging_io.resolve_spacing(frame, outside, None).row_mm == 0.4


def test_spacing_sources_in_order():
  mask = np.ones((100, 200), bool)
  assert imaging_io.resolve_spacing(
      _frame_with(pixel_spacing=(0.2, 0.3)), mask, (0.9, 0.9)) == (
          imaging_io.Spacing(0.2, 0.3, "pixel_spacing"))
  assert imaging_io.resolve_spacing(_frame_with(), mask, (0.9, 0.8)) == (
      imaging_io.Spacing(0.9, 0.8, "option"))
  none = imaging_io.resolve_spacing(_frame_with(), mask, None)
  assert none == imaging_io.Spacing(None, None, "none")
  assert not none.known


def test_dicom_regions_without_cm_ignored(frame, tmp_path):
  path = dicom_builder.write_dicom(
      tmp_path / "doppler.dcm", [frame], pixel_spacing=(0.2, 0.2),
      regions=[dicom_builder.ultrasound_region((0, 0, 639, 479), 0.03,
                                               units=4)])
  result = _read_one(path)
  assert result.regions == ()
  spacing = imaging_io.resolve_spacing(result, np.ones(frame.shape, bool),
                                       None)
  assert spacing.source == "pixel_spacing"


# pydicom's own test files, where they are installed with pydicom.


def _pydicom_file(name: str) -> pathlib.Path:
  # download=False: never fetch the files that pydicom keeps online.
  path = pydicom.data.get_testdata_file(name, download=False)
  if path is None:
    pytest.skip(f"pydicom test file {name} is not installed")
  return pathlib.Path(path)


def test_pydicom_ybr_422_jpeg_cine():
  path = _pydicom_file("examples_ybr_color.dcm")
  frames = list(imaging_io.read_frames(path))
  assert len(frames) == 30
  assert frames[0].pixels.shape == (240, 320)
  assert frames[0].pixels.dtype == np.uint8
  assert frames[0].regions[0].delta_x_mm == pytest.approx(0.5105, abs=1e-4)
  # pydicom's own YBR to RGB conversion (`pixel_array`) gives the same gray.
  rgb = pydicom.dcmread(path).pixel_array[7]
  np.testing.assert_array_equal(frames[7].pixels, _luma(rgb))


def test_pydicom_palette_colour():
  result = _read_one(_pydicom_file("examples_palette.dcm"))
  assert result.pixels.shape == (350, 800)
  assert "PALETTE COLOR" in result.conversion
  assert result.pixels.std() > 10


@pytest.mark.parametrize("name,message", [
    ("MR_truncated.dcm", "less than expected"),
    ("rtplan.dcm", "no pixel data"),
    ("SC_rgb_small_odd.dcm", "3x3 pixels"),
])
def test_pydicom_bad_files_rejected(name, message):
  with pytest.raises(imaging_io.ImageReadError, match=message):
    list(imaging_io.read_frames(_pydicom_file(name)))


# Bad input.


def _png_bytes(frame: np.ndarray, tmp_path: pathlib.Path) -> bytes:
  path = tmp_path / "source.png"
  Image.fromarray(frame).save(path)
  return path.read_bytes()


def test_bad_inputs_rejected(frame, tmp_path):
  cases = {}
  cases["empty.png"] = (b"", "empty")
  cases["notes.png"] = (b"not an image at all\n" * 10, "not a PNG")
  png = _png_bytes(frame, tmp_path)
  cases["cut.png"] = (png[:len(png) // 3], "truncated")
  jpeg_path = tmp_path / "source.jpg"
  Image.fromarray(frame).save(jpeg_path)
  cases["cut.jpg"] = (jpeg_path.read_bytes()[:4000], "truncated")
  cases["fake.dcm"] = (b"plain text, not DICOM\n" * 10,
                       "cannot read the DICOM file")
  for name, (content, message) in cases.items():
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(imaging_io.ImageReadError, match=message):
      list(imaging_io.read_frames(path))


@pytest.mark.parametrize("shape,message", [
    ((15, 400), "400x15 pixels"),
    ((20, 8193), "8193x20 pixels"),
])
def test_frame_size_limits(tmp_path, shape, message):
  path = tmp_path / "odd.png"
  Image.fromarray(np.zeros(shape, np.uint8)).save(path)
  with pytest.raises(imaging_io.ImageReadError, match=message):
    list(imaging_io.read_frames(path))


def test_unsupported_format_rejected(frame, tmp_path):
  path = tmp_path / "frame.gif"
  Image.fromarray(frame).save(path)
  with pytest.raises(imaging_io.ImageReadError, match="format GIF"):
    list(imaging_io.read_frames(path))


def test_built_dicom_without_pixels_or_truncated(frame, tmp_path):
  empty = dicom_builder.write_dicom(tmp_path / "header.dcm", [frame],
                                    with_pixels=False)
  with pytest.raises(imaging_io.ImageReadError, match="no pixel data"):
    list(imaging_io.read_frames(empty))

  whole = dicom_builder.write_dicom(tmp_path / "whole.dcm", [frame])
  cut = tmp_path / "cut.dcm"
  cut.write_bytes(whole.read_bytes()[:100_000])
  with pytest.raises(imaging_io.ImageReadError, match="less than expected"):
    list(imaging_io.read_frames(cut))


def test_missing_file_rejected(tmp_path):
  with pytest.raises(imaging_io.ImageReadError, match="cannot read"):
    list(imaging_io.read_frames(tmp_path / "absent.png"))


# Finding inputs.


def test_find_inputs_in_folders_and_globs(frame, tmp_path):
  scans = tmp_path / "scans"
  (scans / "day2").mkdir(parents=True)
  Image.fromarray(frame).save(scans / "a.png")
  Image.fromarray(frame).save(scans / "day2" / "b.JPG")
  dicom_builder.write_dicom(scans / "day2" / "IM0001", [frame])
  (scans / "notes.txt").write_text("not a scan")
  output = scans / "predictions"
  (output / "masks").mkdir(parents=True)
  Image.fromarray(frame).save(output / "masks" / "a.png")

  files, problems = imaging_io.find_inputs([str(scans)], exclude=output)
  assert sorted(p.name for p in files) == ["IM0001", "a.png", "b.JPG"]
  assert problems == []

  files, problems = imaging_io.find_inputs(
      [str(scans / "*.png"), str(scans / "a.png"), str(tmp_path / "none*"),
       str(tmp_path / "absent.png")])
  assert [p.name for p in files] == ["a.png"]
  assert [pattern for pattern, _ in problems] == [
      str(tmp_path / "none*"), str(tmp_path / "absent.png")]
  assert "matches no file" in problems[0][1]
  assert "no such file" in problems[1][1]
