"""Datasets: offline import of the official files, TFDS storage, and the paper's splits."""

from fgsm_repro.data.splits import Splits, make_splits
from fgsm_repro.data.store import (
    Dataset,
    DatasetInfo,
    default_data_dir,
    download_dataset,
    import_dataset,
    load_dataset,
)

__all__ = ["Dataset", "DatasetInfo", "Splits", "default_data_dir", "download_dataset",
           "import_dataset", "load_dataset", "make_splits"]
