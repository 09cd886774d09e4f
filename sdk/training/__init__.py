"""Training data: readers for the published OTAvatar data layout (spec 3.1).

numpy only at import (no torch); the LMDB reader imports `lmdb` (the `train` extra) when a dataset is opened.
"""
from __future__ import annotations

from otavatar.training.lmdb_dataset import FRAME_DIGITS, KEYPOINT_SIZE, LmdbDataset, LmdbLayoutError, person_id

__all__ = ["FRAME_DIGITS", "KEYPOINT_SIZE", "LmdbDataset", "LmdbLayoutError", "person_id"]
