"""Data: IDX reader, dataset sources (real and synthetic) and the in-memory datamodule."""

from genclust.data.datamodule import ClusteringDataModule, TensorSet

__all__ = ["ClusteringDataModule", "TensorSet"]
