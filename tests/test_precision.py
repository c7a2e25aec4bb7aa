"""A bf16 request falls back to float32 on CPUs that only emulate bf16 (genclust.precision)."""

import logging

import pytest
import torch

import genclust.methods.base as base
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


@pytest.fixture
def x86_cpu(monkeypatch):
    """An x86 CPU whose bf16 instructions and measured bf16 speed the test sets; the decision is re-made."""
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.delenv(precision.ENV_FORCE, raising=False)
    precision.cpu_has_native_bf16.cache_clear()
    yield
    precision.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize(("avx512_bf16", "amx", "speedup", "expected"), [
    (True, False, 0.61, False),  # the Intel VM of 2026-12-07: AVX512-BF16 without AMX, bf16 matmul 0.61x float32
    (True, False, 2.2, True),    # the AMD host of 2026-12-03: the same instructions, 2.2x float32
    (True, False, 0.95, True),   # a loaded CPU hides the difference: an unclear reading keeps bf16, as before
    (True, True, 0.0, True),     # AMX: fast without measuring (the speedup is never read)
    (False, False, 9.9, False),  # AVX2 / AVX512 without BF16: emulated, never measured
])
def test_bf16_is_used_where_it_measures_faster(x86_cpu, monkeypatch, avx512_bf16, amx, speedup, expected):
    monkeypatch.setattr(precision, "_cpu_bf16_instructions", lambda: (avx512_bf16, amx))
    measured = []
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: measured.append(1) or speedup)
    assert precision.cpu_has_native_bf16() is expected
    assert bool(measured) == (avx512_bf16 and not amx)


def test_slow_bf16_warning_names_the_measured_speed(x86_cpu, monkeypatch, caplog):
    monkeypatch.setattr(precision, "_cpu_bf16_instructions", lambda: (True, False))
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.61)
    with caplog.at_level(logging.WARNING, logger="genclust"):
        assert not precision.use_bf16("cpu", "method.autocast")
    assert "0.61x float32" in caplog.text and "running float32" in caplog.text


def test_a_run_records_the_measured_bf16_speed(x86_cpu, monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "_cpu_bf16_instructions", lambda: (True, False))
    monkeypatch.setattr(precision, "_matmul_speedup", lambda: 0.61)
    precision.cpu_bf16_speedup.cache_clear()
    cfg = compose_cfg(["method=udc", "dataset=digits", "trainer=smoke", "trainer.precision=bf16-mixed",
                       "trainer.limit_train_batches=2", "callbacks.evaluator.every_n_epochs=0",
                       "method.autocast=bf16", *tiny_overrides()], output_dir=tmp_path)
    try:
        result = run(cfg)
    finally:
        precision.cpu_bf16_speedup.cache_clear()
    assert result["precision"] == "32-true" and result["cpu_bf16_speedup"] == 0.61


def test_bf16_speed_measurement_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    assert precision.cpu_bf16_speedup.__wrapped__() > 0
    assert torch.equal(torch.get_rng_state(), state)


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


def test_bf16_mixed_manual_steps_never_reuse_stale_casts(cpu_with_bf16, monkeypatch, tmp_path):
    """Lightning's bf16-mixed wraps a whole training_step (critic and generator updates) in one autocast region.
    Its cast cache is off there (Lightning's AMP plugin), so no player sees another's pre-update weights; if a
    plugin ever turns it on, ``update`` drops the cache after every optimizer step."""
    monkeypatch.setenv(precision.ENV_FORCE, "1")  # CI hosts without native bf16 still take the bf16 path
    states = []
    real = base.drop_stale_casts
    monkeypatch.setattr(base, "drop_stale_casts", lambda d: (states.append(
        (torch.is_autocast_enabled(d), torch.is_autocast_cache_enabled())), real(d)))
    cfg = compose_cfg(["method=clustergan", "dataset=digits", "trainer=smoke", "trainer.precision=bf16-mixed",
                       "callbacks.evaluator.every_n_epochs=0", "method.n_critic=1", "logger=none"], output_dir=tmp_path)
    run(cfg)
    assert len(states) >= 6  # 3 batches x (critic + generator) updates
    assert all(enabled and not cached for enabled, cached in states)  # inside the region, with the cache off


def _tree_tensors(run_dir) -> list[torch.Tensor]:
    out = []

    def walk(o):
        if isinstance(o, torch.Tensor):
            out.append(o.detach().float())
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                walk(o[k])
        elif isinstance(o, list | tuple):
            for x in o:
                walk(x)

    for f in sorted((run_dir / "tree").rglob("*.pt")):
        walk(torch.load(f, map_location="cpu", weights_only=False))
    return out


def test_hc_mgan_method_autocast_matches_bf16_mixed(cpu_with_bf16, monkeypatch, tmp_path):
    """HC-MGAN's autocast region spans its D, C and G updates: with the cast cache dropped after every step,
    ``method.autocast=bf16`` is the same computation as Lightning's ``bf16-mixed`` (whose cache is off)."""
    monkeypatch.setenv(precision.ENV_FORCE, "1")
    base_overrides = ["method=hc_mgan", "dataset=digits", "trainer=smoke", "logger=none", "method.n_clusters=3",
                      "method.refinement.count=1", "method.raw_split.epochs=2", "method.raw_split.min_iters=0",
                      "method.refinement.epochs=2", "method.refinement.min_iters=0"]
    runs = {}
    for name, extra in (("mixed", "trainer.precision=bf16-mixed"), ("method", "method.autocast=bf16")):
        run(compose_cfg([*base_overrides, extra], output_dir=tmp_path / name))
        runs[name] = _tree_tensors(tmp_path / name)
    assert runs["mixed"] and len(runs["mixed"]) == len(runs["method"])
    assert all(torch.equal(a, b) for a, b in zip(runs["mixed"], runs["method"]))
