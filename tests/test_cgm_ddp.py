"""CGM under 2-process CPU DDP (gloo): the per-index state (z_i, y_i) and the generator after an epoch equal a
single process's fed the union of the ranks' batches (issue: "DDP: the per-index state after a 2-process gloo
epoch equals the single-process one on the same batches").

Why they can be equal: with the generator's batch norm off every example's Langevin chain and y-posterior
depend on that example alone, DDP averages the ranks' equal-sized mean-loss gradients into the union batch's
mean-loss gradient, and with `langevin.noise=false`, `y_inference=map` nothing is drawn at random during the
epoch. Both runs start from one generator and one latent table; the DDP ranks record the indices they train on
and the single process replays them, rank 0's batch then rank 1's, as one batch per step."""

import os

import pytest
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from genclust.data.datamodule import _IndexedTensor, _keep_batch
from genclust.train import build_datamodule
from tests.helpers import compose_cfg, free_port

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

STEPS = 3  # learning iterations per rank (the first 3 x 16 of each rank's shard: no padded duplicates)
OVERRIDES = ["method=cgm", "dataset=digits", "method.batch_size=16", "method.z_dim=4", "method.langevin.steps=5",
             "method.langevin.noise=false", "method.y_inference=map", "method.nets.generator.batch_norm=false",
             "method.nets.generator.channels=[16,8,8,8,8]", "method.readouts={}"]


def _method_and_data(start: dict):
    cfg = compose_cfg(OVERRIDES)
    torch.manual_seed(0)
    method = instantiate(cfg.method, _convert_="all")
    dm = build_datamodule(cfg, method)
    dm.setup("fit")
    method.load_state_dict(start["generator"], strict=False)  # the one starting generator ...
    tables = {"z": start["z"], "y": start["y"]}
    method.latents.allocate(len(dm.fit_set), lambda name, shape, dtype: tables[name].clone())  # ... and state
    return method, dm


class _Record(pl.Callback):
    """The dataset indices of every training batch (the ranks' writes are merged by the method itself, at the
    epoch's end: ClusteringMethod.on_train_epoch_end)."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch[1].cpu().clone())


def _trainer(devices: int, record: _Record) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=1,
                      limit_train_batches=STEPS, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[record])


def _result(method) -> dict:
    return {"z": method.latents.z.cpu().clone(), "y": method.latents.y.cpu().clone(),
            "generator": {k: v.cpu().clone() for k, v in method.generator.state_dict().items()}}


def _worker(rank: int, world: int, port: int, start: dict, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), NODE_RANK="0", PL_GLOBAL_SEED="0")
    torch.set_num_threads(1)
    method, dm = _method_and_data(start)
    record = _Record()
    _trainer(world, record).fit(method, datamodule=dm)
    out[rank] = {**_result(method), "batches": record.batches}


def test_cgm_ddp_epoch_state_equals_single_process_on_the_union_batches():
    cfg = compose_cfg(OVERRIDES)
    torch.manual_seed(0)
    method = instantiate(cfg.method, _convert_="all")
    dm = build_datamodule(cfg, method)
    dm.setup("fit")
    n = len(dm.fit_set)
    start = {"generator": {f"generator.{k}": v.clone() for k, v in method.generator.state_dict().items()},
             "z": torch.randn(n, 4), "y": torch.randint(0, 10, (n,))}

    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, free_port(), start, out), nprocs=2, join=True)
    ranks = [out[0], out[1]]
    per_rank = [r["batches"] for r in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == STEPS
    seen = torch.cat([torch.cat(b) for b in per_rank])
    assert len(seen.unique()) == len(seen), "the ranks' batches overlap (a padded duplicate)"

    # the single process: the same start, each step one batch = rank 0's batch then rank 1's
    single, dm = _method_and_data(start)
    union = [torch.cat([a, b]).tolist() for a, b in zip(*per_rank, strict=True)]
    dm.train_dataloader = lambda: DataLoader(_IndexedTensor(dm.fit_set.x), batch_sampler=union, collate_fn=_keep_batch)
    record = _Record()
    _trainer(1, record).fit(single, datamodule=dm)
    assert [b.tolist() for b in record.batches] == union
    expected = _result(single)

    untouched = torch.ones(n, dtype=torch.bool)
    untouched[seen] = False
    assert not torch.equal(expected["z"][seen], start["z"][seen]), "the epoch moved no z_i"
    assert not torch.equal(expected["y"][seen], start["y"][seen]), "the y-steps relabelled nothing"
    assert torch.equal(expected["z"][untouched], start["z"][untouched])
    for rank, got in enumerate(ranks):
        torch.testing.assert_close(got["z"], expected["z"], rtol=1e-4, atol=1e-5, msg=f"rank {rank}: z_i")
        assert torch.equal(got["y"], expected["y"]), f"rank {rank}: y_i differ"
        for key, value in expected["generator"].items():
            torch.testing.assert_close(got["generator"][key], value, rtol=1e-4, atol=1e-5, msg=f"rank {rank}: {key}")
