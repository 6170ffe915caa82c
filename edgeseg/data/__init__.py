"""Data sets: ``--data`` resolution, folder layouts, checked splits and training augmentation."""

from edgeseg.data.dataset import SegmentationData
from edgeseg.data.layouts import list_pairs
from edgeseg.data.spec import DatasetSpec, preset_names, resolve_dataset
from edgeseg.data.transforms import train_augment

__all__ = ["DatasetSpec", "SegmentationData", "list_pairs", "preset_names", "resolve_dataset", "train_augment"]
