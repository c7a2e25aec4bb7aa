"""The evaluator under 2-process CPU DDP (gloo) gives exactly the single-process result."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from genclust.data import ClusteringDataModule
from genclust.evaluation.callback import predict_set
from genclust.latent import ExampleState
from genclust.methods.baselines import KMeansBaseline
from tests.helpers import free_port
from tests.test_data import DIGITS

pytestmark = pytest.mark.ddp


def _fitted_model_and_data():
    torch.manual_seed(0)
    dm = ClusteringDataModule(DIGITS, batch_size=32, download=False)
    dm.setup("fit")
    model = KMeansBaseline(10, [1, 8, 8], n_init=1)
    model.fit_method(None, dm)
    return model, dm


def _worker(rank: int, world: int, port: int, state: dict, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, dm = _fitted_model_and_data()
        model.load_state_dict(state)  # the same weights as the single-process model
        results = {}
        for split, data in dm.eval_sets.items():
            pred = predict_set(model, data, batch_size=64)
            results[split] = (pred["probs"], pred["labels"])
        out[rank] = results
    finally:
        dist.destroy_process_group()


def test_ddp_gather_equals_single_process():
    model, dm = _fitted_model_and_data()
    assert len(dm.eval_sets["test"]) % 2 == 1, "an odd-sized set makes the shards pad a duplicate"
    single = {split: tuple(predict_set(model, data)[k] for k in ("probs", "labels"))
              for split, data in dm.eval_sets.items()}
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, free_port(), model.state_dict(), out), nprocs=2, join=True)
    for rank in (0, 1):
        for split, (probs, labels) in single.items():
            ddp_probs, ddp_labels = out[rank][split]
            assert torch.equal(ddp_labels, labels), f"rank {rank} {split}: labels differ"
            torch.testing.assert_close(ddp_probs, probs, rtol=0, atol=1e-6)


def _state_worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        state = ExampleState({"z": ((3,), torch.float32), "y": ((), torch.long)})
        state.allocate(20)
        mine = torch.arange(rank, 20, world)  # each rank trains on its own shard of indices ...
        state.write("z", mine, mine[:, None].float().expand(-1, 3) * 10)
        state.write("y", mine, mine % 7)
        state.write("z", torch.tensor([19]), torch.full((1, 3), float(rank)))  # ... and a padded duplicate
        state.sync()
        out[rank] = (state.z.clone(), state.y.clone())
    finally:
        dist.destroy_process_group()


def test_example_state_sync_equals_single_process():
    """Per-index state after a 2-process epoch: each rank's writes, merged; a row both wrote takes rank 1's."""
    single = ExampleState({"z": ((3,), torch.float32), "y": ((), torch.long)})
    single.allocate(20)
    every = torch.arange(20)
    single.write("z", every, every[:, None].float().expand(-1, 3) * 10)
    single.write("y", every, every % 7)
    single.z[19] = 1.0  # written by both ranks (values 0 and 1): the highest rank's, whole
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_state_worker, args=(2, free_port(), out), nprocs=2, join=True)
    for rank in (0, 1):
        z, y = out[rank]
        assert torch.equal(z, single.z) and torch.equal(y, single.y), f"rank {rank}"
