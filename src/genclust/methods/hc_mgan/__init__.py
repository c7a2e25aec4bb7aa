"""HC-MGAN: top-down hierarchical clustering with multi-generator GANs (de Mello et al., AAAI 2022).

``module.HCMGAN`` is the LightningModule (tree growth in ``fit_method``), ``tree.Tree`` the membership
vectors and split classifiers, ``games`` the raw-split MGAN and refinement GAN pair, ``figures`` the tree figure.
"""

from genclust.methods.hc_mgan.module import HCMGAN

__all__ = ["HCMGAN"]
