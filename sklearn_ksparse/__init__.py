"""K-sparse autoencoders for scikit-learn."""

from ._ksparse import KSparseAutoencoder
from ._training import TrainingDivergedError

__all__ = ["KSparseAutoencoder", "TrainingDivergedError"]
__version__ = "0.1.0"
