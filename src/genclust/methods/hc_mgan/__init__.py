"""HC-MGAN: top-down hierarchical clustering with multi-generator GANs (de Mello et al., AAAI 2022).

``module.HCMGAN`` is the LightningModule (tree growth in ``fit_method``), ``tree.Tree`` the membership
vectors and split classifiers, ``games`` the raw-split MGAN and refinement GAN pair, ``settings`` the
grouped hyperparameters, ``store`` the tree folder. Nets: ``genclust.nets.hc_mgan``; figure:
``genclust.viz.tree``.
"""

from genclust.methods.hc_mgan.module import HCMGAN

__all__ = ["HCMGAN"]
