"""genclust: generative deep clustering of images on Hydra + PyTorch Lightning."""

__version__ = "0.1.0"
