"""Loss functions shared by the methods: pure functions of tensors, tested on their own."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from genclust.nets.blocks import twice_differentiated


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     per_sample_alpha: bool = True, center: float = 1.0) -> Tensor:
    """WGAN-GP penalty E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates (Gulrajani et al. 2017).

    ``per_sample_alpha=False`` draws one interpolation weight for the whole batch, as the
    official ClusterGAN code does. ``critic`` may return [N] or [N, k] (summed per example).
    """
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    alpha = torch.rand(shape if per_sample_alpha else (1,) * real.dim(), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    with twice_differentiated():  # the critic's LeakyReLUs drop their zero second-derivative branch
        scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - center) ** 2).mean()


def mean_entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of the softmax of ``logits`` over dim 1."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()
