"""A bf16 request falls back to float32 on CPUs that only emulate bf16 (genclust.precision)."""

import logging

import pytest
import torch

import genclust.precision as precision
from genclust.methods.udc import UDC
from genclust.train import run
from tests.helpers import compose_cfg
from tests.test_clustergan import make as make_clustergan
from tests.test_udc import make as make_udc
from tests.test_udc import tiny_overrides


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.delenv(precision.ENV_FORCE, raising=False)


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)


def udc(**kw) -> UDC:
    return make_udc((1, 8, 8), k=4, batch_size=8, z_dim=2, **kw)


def test_bf16_request_runs_float32_with_one_warning_on_emulating_cpu(cpu_without_bf16, caplog):
    m = udc(autocast="bf16")
    with caplog.at_level(logging.WARNING, logger="genclust"):
        with m.autocast():
            x = m.generate(*m._draw(3))
        m.critic_loss(torch.rand(3, 1, 8, 8), x.detach())
    assert x.dtype == torch.float32 and m.describe()["autocast"] == "none"
    warnings = [r.message for r in caplog.records if "bf16" in r.message]
    assert len(warnings) == 1 and "UDC method.autocast" in warnings[0] and "float32" in warnings[0]
    cg = make_clustergan(k=4, autocast="bf16", latent_dim=3)  # the same key, the same fallback
    assert not cg.autocast_active() and cg.describe()["autocast"] == "none"


def test_env_keeps_emulated_bf16(cpu_without_bf16, monkeypatch):
    monkeypatch.setenv(precision.ENV_FORCE, "1")
    m = udc(autocast="bf16")
    with m.autocast():
        assert m.generate(*m._draw(3)).dtype == torch.bfloat16


def test_native_bf16_is_kept(cpu_with_bf16):
    assert udc(autocast="bf16").autocast_active()
    assert precision.trainer_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_trainer_precision(cpu_without_bf16):
    assert precision.trainer_precision("bf16-mixed", "cpu") == "32-true"
    assert precision.trainer_precision("32-true", "cpu") == "32-true"
    assert precision.trainer_precision(None, "cpu") is None
    assert precision.trainer_precision("bf16-mixed", "gpu") == "bf16-mixed"  # accelerators: Lightning's call
    assert precision.trainer_precision("bf16-mixed", "mps") == "bf16-mixed"
    if not torch.cuda.is_available():
        assert precision.trainer_precision("bf16-mixed", "auto") == "32-true"


def test_run_records_fallback_precision(cpu_without_bf16, tmp_path):
    cfg = compose_cfg(["method=udc", "dataset=digits", "trainer=smoke", "trainer.precision=bf16-mixed",
                       "trainer.limit_train_batches=10", "callbacks.evaluator.every_n_epochs=0",
                       "method.autocast=bf16", *tiny_overrides()], output_dir=tmp_path)
    result = run(cfg)
    assert result["precision"] == "32-true" and result["method_info"]["autocast"] == "none"


def test_autocast_cast_cache_is_dropped_after_an_optimizer_step():
    lin, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = lin(x)
        with torch.no_grad():
            lin.weight.add_(1.0)  # what optimizer.step() does, in place
        assert torch.equal(lin(x), before)  # autocast's cached bf16 weight is stale: the reason for the helper
        precision.drop_stale_casts("cpu")
        assert not torch.equal(lin(x), before)
    precision.drop_stale_casts("cpu")  # outside a region: a no-op


def test_bf16_mixed_manual_steps_drop_stale_casts(cpu_with_bf16, monkeypatch, tmp_path):
    """Lightning's bf16-mixed wraps a whole training_step (critic and generator updates) in one autocast region:
    every optimizer step of the methods' ``update`` must drop the cached casts, or the next player sees old weights."""
    monkeypatch.setenv(precision.ENV_FORCE, "1")  # CI hosts without native bf16 still take the bf16 path
    calls = []
    real = torch.clear_autocast_cache
    monkeypatch.setattr(torch, "clear_autocast_cache", lambda: (calls.append(torch.is_autocast_enabled("cpu")), real()))
    cfg = compose_cfg(["method=clustergan", "dataset=digits", "trainer=smoke", "trainer.precision=bf16-mixed",
                       "callbacks.evaluator.every_n_epochs=0", "method.n_critic=1", "logger=none"], output_dir=tmp_path)
    run(cfg)
    assert len(calls) >= 6 and all(calls)  # 3 batches x (critic + generator) updates, each inside the region
