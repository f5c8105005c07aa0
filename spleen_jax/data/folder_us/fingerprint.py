"""Fingerprint of a user folder's content, to detect a stale TFDS build."""

import hashlib
import pathlib

from spleen_jax.data.folder_us import folder_config


def folder_fingerprint(config: folder_config.FolderConfig) -> str:
  """Hashes the relative path, size and mtime of every file of the folder.

  Covers every file under the root, hidden ones included, and the side files
  (splits, subjects, spacing, legend) wherever they lie. Reading no file
  content keeps it fast on large folders; a file rewritten with the same
  size within the file system's mtime resolution goes unnoticed.

  Returns:
    A hex SHA-256 digest.
  """
  root = pathlib.Path(config.root)
  digest = hashlib.sha256()
  paths = sorted(p for p in root.rglob("*") if p.is_file())
  for side in (config.splits_file, config.subjects_file, config.spacing_file,
               config.legend_file):
    side_path = pathlib.Path(side) if side else None
    if side_path is not None and side_path.is_file() and (
        not side_path.is_relative_to(root)):
      paths.append(side_path)
  for path in paths:
    stat = path.stat()
    name = (path.relative_to(root).as_posix() if path.is_relative_to(root)
            else str(path))
    digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()
