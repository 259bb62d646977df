"""Data layer: read files, validate, split, label map, length-bucketed batches."""

from textlora.data.io import Table, read_table
from textlora.data.labels import LabelMap
from textlora.data.splits import Dataset, Split, load_dataset

__all__ = ["Dataset", "LabelMap", "Split", "Table", "load_dataset", "read_table"]
