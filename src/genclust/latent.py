"""Latent inference: optimising or sampling latents against a generator, and per-example latent state.

* :func:`descend` — gradient steps on latents ``z`` for an energy ``E(z)`` (one value per latent; the
  latents are independent, so the gradient of the sum is each one's), with Adam or plain SGD,
  optional clamping after every step. ClusterGAN's Algorithm 1 (backprop decoding) runs on it.
* :func:`langevin` — Langevin dynamics ``z <- z - (delta^2 / 2) dE/dz + delta * eps`` (CGM's and the
  alternating back-propagation papers' inference of z); ``noise=False`` gives plain gradient descent
  with step delta^2 / 2.

Both work under ``torch.no_grad``/``inference_mode`` callers (an evaluation) and in training: they
open their own ``enable_grad`` region on a detached copy of ``z`` and, with ``frozen=(nets...)``,
take no gradient into the nets' weights (the nets stay as the caller left them: train or eval mode).
Only ``z`` gets a graph; nothing escapes into the caller's autograd state.

* :class:`ExampleState` — per-example tensors keyed by the dataset index (CGM's stored z_i and y_i,
  any method's per-example memory), saved in checkpoints, and correct under DDP: each rank writes the
  indices it trains on and :meth:`ExampleState.sync` merges the ranks' writes (call it on every rank).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from genclust.nets.blocks import frozen as frozen_params

Energy = Callable[[Tensor], Tensor]


def _grad(energy: Energy, z: Tensor) -> tuple[Tensor, Tensor]:
    z = z.detach().requires_grad_(True)
    e = energy(z)
    (g,) = torch.autograd.grad(e.sum(), z)
    return g, e.detach()


def descend(energy: Energy, z0: Tensor, steps: int, lr: float, optimizer: str = "adam",
            betas: Sequence[float] = (0.9, 0.999), clamp: float | None = None,
            frozen: Sequence[nn.Module | None] = ()) -> Tensor:
    """``steps`` optimizer steps on ``z`` (from ``z0``) minimising ``energy(z)`` [N]; returns the final z.

    ``optimizer``: 'adam' (torch.optim.Adam, ``betas``) or 'sgd'. ``clamp``: z kept in [-clamp, clamp]
    after every step (ClusterGAN's Algorithm 1 clips z_n to [-0.6, 0.6]).
    """
    with torch.inference_mode(False), torch.enable_grad(), frozen_params(*frozen):
        z = z0.detach().clone().requires_grad_(True)
        if optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam([z], lr=float(lr), betas=(float(betas[0]), float(betas[1])))
        elif optimizer == "sgd":
            opt = torch.optim.SGD([z], lr=float(lr))
        else:
            raise ValueError(f"descend: optimizer must be adam|sgd, got {optimizer!r}")
        for _ in range(int(steps)):
            opt.zero_grad(set_to_none=True)
            (g,) = torch.autograd.grad(energy(z).sum(), z)
            z.grad = g
            opt.step()
            if clamp is not None:
                with torch.no_grad():
                    z.clamp_(-float(clamp), float(clamp))
    return z.detach()


def langevin(energy: Energy, z0: Tensor, steps: int, step_size: float, noise: bool = True,
             frozen: Sequence[nn.Module | None] = (), generator: torch.Generator | None = None) -> Tensor:
    """``steps`` Langevin steps z <- z - (delta^2 / 2) dE/dz + delta * eps, eps ~ N(0, I), delta = ``step_size``.

    ``energy`` is the negative log-density of z given everything else (e.g. ||x - G(z)||^2 / (2 sigma^2)
    + ||z||^2 / 2), one value per latent. ``noise=False``: gradient descent with step delta^2 / 2.
    """
    delta = float(step_size)
    with torch.inference_mode(False), torch.no_grad(), frozen_params(*frozen):
        z = z0.detach().clone()
        for _ in range(int(steps)):
            with torch.enable_grad():
                g, _ = _grad(energy, z)
            z.add_(g, alpha=-0.5 * delta * delta)
            if noise:
                z.add_(torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype), alpha=delta)
    return z


class ExampleState(nn.Module):
    """Named per-example tensors ``[N, ...]`` indexed by the fit set's dataset index.

    ``allocate(n)`` creates them (with their initial values); ``read(name, idx)`` / ``write(name, idx, v)``
    access one batch. Under DDP every rank holds the whole table, writes only the indices of its own
    batches, and :meth:`sync` (a collective: call it on every rank, e.g. before an evaluation and when
    checkpointing) merges the writes: an index written on several ranks since the last sync takes the
    highest rank's value.
    The tables are buffers: they move with the module and are in ``state_dict``; loading a state of
    another size re-allocates them.
    """

    def __init__(self, specs: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None) -> None:
        super().__init__()
        self.specs = dict(specs or {})
        self._dirty: dict[str, Tensor] = {}  # per table: rows written since the last sync

    @property
    def size(self) -> int:
        name = next(iter(self.specs), None)
        buf = getattr(self, name, None) if name else None
        return 0 if buf is None else int(buf.shape[0])

    def allocate(self, n: int, init: Callable[[str, tuple[int, ...], torch.dtype], Tensor] | None = None,
                 device: torch.device | None = None) -> None:
        """Create every table with ``n`` rows (``init(name, shape, dtype)`` gives the initial values)."""
        for name, (shape, dtype) in self.specs.items():
            full = (int(n), *shape)
            value = init(name, full, dtype) if init is not None else torch.zeros(full, dtype=dtype)
            value = value.to(device=device, dtype=dtype)
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.broadcast(value, src=0)  # one initial state (rank 0's) on every rank
            self.register_buffer(name, value)
        self._dirty = {}

    def read(self, name: str, idx: Tensor) -> Tensor:
        return getattr(self, name)[idx.to(getattr(self, name).device)]

    def write(self, name: str, idx: Tensor, value: Tensor) -> None:
        table = getattr(self, name)
        idx = idx.to(table.device)
        table[idx] = value.to(table.dtype)
        dirty = self._dirty.get(name)
        if dirty is None or dirty.device != table.device or len(dirty) != len(table):
            dirty = self._dirty[name] = torch.zeros(len(table), dtype=torch.bool, device=table.device)
        dirty[idx] = True

    @torch.no_grad()
    def sync(self) -> None:
        """Merge the writes of every DDP rank since the last sync (no-op in a single process).

        A row written on one rank takes that rank's value; a row written on several (a padded duplicate of
        the DistributedSampler) takes the highest rank's value, whole: no averaging, so an integer table
        (CGM's y) never gets a label that nobody wrote."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            self._dirty = {}
            return
        comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        me = dist.get_rank() + 1
        for name in self.specs:  # every rank visits every allocated table in the same order (collectives)
            table = getattr(self, name, None)
            if table is None:
                continue
            dirty = self._dirty.get(name)
            dirty = (dirty if dirty is not None else torch.zeros(len(table), dtype=torch.bool)).to(comm)
            owner = torch.where(dirty, torch.tensor(me, device=comm), torch.tensor(0, device=comm))
            dist.all_reduce(owner, op=dist.ReduceOp.MAX)  # the writing rank (+1) of each row, 0 = unwritten
            mine = (owner == me).reshape(-1, *([1] * (table.dim() - 1)))
            value = torch.where(mine, table.to(comm, torch.float64), torch.zeros((), dtype=torch.float64, device=comm))
            dist.all_reduce(value)  # float64 holds float32 and integer labels exactly
            written = (owner > 0).to(table.device)
            table[written] = value.to(table.device)[written].to(table.dtype)
        self._dirty = {}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        for name in self.specs:  # a saved table of another size (or none yet): take the saved one's shape
            key = prefix + name
            current = getattr(self, name, None)
            if key in state_dict and (current is None or current.shape != state_dict[key].shape):
                self.register_buffer(name, torch.empty_like(state_dict[key]))
                self._dirty = {}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


__all__ = ["descend", "langevin", "ExampleState"]
