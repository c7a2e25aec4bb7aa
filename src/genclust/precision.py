"""bf16 only where the hardware runs it: the one place that decides whether a bf16 request is honoured.

Our CPU-budget configs ask for bf16 because on CPUs with AVX512-BF16 or AMX it makes a GAN step
1.2-2.2x faster. On a CPU without them (AVX2-only machines, e.g. many AMD EPYC hosts) PyTorch
*emulates* bf16 and the same step is about 10x slower (2026-12-02, AMD EPYC with AVX2, 2 threads:
UDC's budget step 118 ms in fp32, 1,209 ms under bf16 autocast; the default digits job hit its time
limit after 5 of its 150 epochs and scored ACC 0.36). So a bf16 request on such a CPU falls back to float32,
with one warning; ``GENCLUST_EMULATED_BF16=1`` keeps bf16 anyway (to reproduce bf16 numerics).

The instruction set is not the whole story. On an Intel Xeon VM with AVX512-BF16 but no AMX (2026-12-07,
2 threads) oneDNN's bf16 ``torch.mm`` ran at 0.61x float32 (145 vs 237 GFLOP/s) and the budget steps were
1.22-1.27x *slower* under bf16; on an AMD host with the same AVX512-BF16 (no AMX) bf16 ran 2.2x faster. So on
an x86 CPU whose only bf16 hardware is AVX512-BF16, a short matmul measurement (~60 ms, once per process)
can veto bf16: float32 runs where bf16 measures clearly slower (below ``BF16_SLOWER_BELOW``). The veto is
one-sided because a loaded CPU hides the difference (with another 2-thread job on the 2 cores, that VM's
ratio read 0.9-1.0): an unclear reading keeps the instruction set's answer, as before. AMX is fast, unmeasured.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import statistics
import time

import torch

log = logging.getLogger("genclust")

ENV_FORCE = "GENCLUST_EMULATED_BF16"


# A bf16 matmul measured below this fraction of float32's speed vetoes bf16 where only AVX512-BF16 provides it.
# The hosts measured so far read 0.55x and 2.2x when idle, and 0.9-1.0x when another job loads the cores.
BF16_SLOWER_BELOW = 0.8


def _cpu_bf16_instructions() -> tuple[bool, bool]:
    """(AVX512-BF16, AMX) on x86, as PyTorch detects them."""
    return bool(torch.cpu._is_avx512_bf16_supported()), bool(torch.cpu._is_amx_tile_supported())


def _matmul_speedup(pairs: int = 30, m: int = 256, k: int = 1024, n: int = 512) -> float:
    """Median over ``pairs`` back-to-back (float32, bf16) products (m x k) @ (k x n) of float32 time / bf16 time,
    at the current thread count. Pairing keeps a host whose speed drifts from favouring either dtype."""
    gen = torch.Generator().manual_seed(0)  # its own generator: measuring must not move the global RNG
    a32, b32 = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    torch.mm(a32, b32), torch.mm(a16, b16)  # warm-up: oneDNN builds its kernels on the first call
    ratios = []
    for i in range(pairs):
        seconds = {}
        for a, b in ((a32, b32), (a16, b16)) if i % 2 == 0 else ((a16, b16), (a32, b32)):  # alternate who goes first
            start = time.perf_counter()
            torch.mm(a, b)
            seconds[a.dtype] = time.perf_counter() - start
        ratios.append(seconds[torch.float32] / seconds[torch.bfloat16])
    return statistics.median(ratios)


@functools.cache
def cpu_bf16_speedup() -> float:
    """float32 time / bf16 time of a matmul on this CPU (> 1: bf16 faster), measured once per process."""
    with torch.no_grad(), torch.autocast("cpu", enabled=False):  # an open bf16 region would cast the fp32 side
        return _matmul_speedup()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU runs bf16 in hardware and it is not measurably slower than float32: AMX, or
    AVX512-BF16 unless a matmul measures bf16 below ``BF16_SLOWER_BELOW`` x float32 (AVX512 alone only emulates
    bf16); elsewhere (e.g. ARM) whatever oneDNN reports."""
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            avx512_bf16, amx = _cpu_bf16_instructions()
            if amx:
                return True
            if not avx512_bf16:
                return False
            speedup = cpu_bf16_speedup()
            log.info("AVX512-BF16 without AMX: a bf16 matmul measures %.2fx float32 on this CPU", speedup)
            return speedup >= BF16_SLOWER_BELOW
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or oneDNN-less build: no fast bf16 path known
        return False


@functools.cache
def _cuda_has_native_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def bf16_is_native(device_type: str) -> bool:
    """Whether bf16 runs at (at least) float32 speed on ``device_type`` ("cpu", "cuda", ...)."""
    if device_type == "cpu":
        return cpu_has_native_bf16()
    if device_type == "cuda":
        return _cuda_has_native_bf16()
    return True  # other accelerators: trust the request


_warned: set[str] = set()


def _why_not_bf16(device_type: str) -> str:
    if device_type != "cpu":
        return f"this {device_type} has no bf16"
    try:
        avx512_bf16, amx = _cpu_bf16_instructions()
    except (AttributeError, RuntimeError):
        avx512_bf16 = amx = False
    if avx512_bf16 and not amx:
        return (f"on this CPU (AVX512-BF16, no AMX) a bf16 matmul runs at {cpu_bf16_speedup():.2f}x float32's "
                f"speed (float32 below {BF16_SLOWER_BELOW}x)")
    return "this CPU has no native bf16 (AVX512-BF16/AMX) and emulated bf16 is ~10x slower"


def use_bf16(device_type: str, what: str) -> bool:
    """Resolve a bf16 request for ``what`` on ``device_type``: True to run bf16, False for float32."""
    if bf16_is_native(device_type) or os.environ.get(ENV_FORCE, "") not in ("", "0"):
        return True
    if what not in _warned:
        _warned.add(what)
        log.warning("%s: bf16 requested, but %s; running float32 instead (%s=1 keeps bf16)",
                    what, _why_not_bf16(device_type), ENV_FORCE)
    return False


def trainer_precision(precision: str | int | None, accelerator: str | None) -> str | int | None:
    """Lightning's ``trainer.precision`` with a bf16 setting replaced by "32-true" when the run is on a CPU
    that only emulates bf16. Accelerators are left to Lightning (and CUDA uninitialised before any fork)."""
    if precision is None or not str(precision).startswith("bf16"):
        return precision
    acc = str(accelerator or "auto")
    on_cpu = acc == "cpu" or (acc == "auto" and not torch.cuda.is_available()
                              and not torch.backends.mps.is_available())
    if not on_cpu:
        return precision
    return precision if use_bf16("cpu", "trainer.precision") else "32-true"


AUTOCAST_MODES = ("none", "bf16")


def check_autocast(request: str, what: str = "method.autocast") -> str:
    """Validate a ``method.autocast`` value (one config key for every method)."""
    if request not in AUTOCAST_MODES:
        from genclust.errors import ConfigError

        raise ConfigError(f"{what} must be one of {'|'.join(AUTOCAST_MODES)}, got {request!r}")
    return request


def autocast_active(device_type: str, request: str, what: str = "method.autocast") -> bool:
    """Whether a ``method.autocast`` request runs bf16 on ``device_type`` (False: float32, see ``use_bf16``)."""
    return request == "bf16" and use_bf16(device_type, what)


def drop_stale_casts(device_type: str) -> None:
    """Forget autocast's cached low-precision copies of the weights, after an optimizer step changed them.

    Inside one autocast region with its cast cache on (``torch.autocast``'s default) every weight is cast
    once and the copy is reused, with no check of the weight's version: an in-place update
    (``optimizer.step()``) leaves the copy stale, and a later player's forward in the same region would see
    the weights from before the update. HC-MGAN's ``method.autocast`` region spans its whole game (D, C and G
    updates), so it needs this after every step; with it, that game is bit-identical to Lightning's
    ``trainer.precision=bf16-mixed``, whose region (2.6) has the cache off (``cache_enabled=False``).
    """
    if torch.is_autocast_enabled(device_type) and torch.is_autocast_cache_enabled():
        torch.clear_autocast_cache()


def autocast(device_type: str, request: str, what: str = "method.autocast"):
    """The one autocast context of every method: bf16 where requested and native, else a no-op."""
    if autocast_active(device_type, request, what):
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Layers whose weights autocast casts to the low precision (CPU and CUDA autocast lists: linear, conv*,
# conv_transpose*); norms keep theirs in float32, so a cache must not cast them either.
AUTOCAST_CAST_LAYERS = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)


class CastWeights:
    """Low-precision copies of a module's autocast-cast weights, kept across steps while the weights do not change.

    Autocast casts every weight at each forward (its cache lives for one region). A net that is only *read* for
    several steps (ClusterGAN's generator during the critic steps) is cast again each time: 5 casts of its 6.4M-weight
    FC per critic round at the paper's settings. ``params(stamp)`` returns the copies for
    ``torch.func.functional_call``, recast whenever ``stamp`` differs from the previous call's: the caller passes
    its count of the module's updates. (Tensor version counters cannot replace the stamp: the fused Adam step
    updates weights in place without bumping them.) The copies are the ones autocast makes (same rounding): the
    forward is bit-identical to autocast's own casts.
    """

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        self.dtype = dtype
        self.weights = {f"{name}.{p_name}" if name else p_name: p
                        for name, layer in module.named_modules() if isinstance(layer, AUTOCAST_CAST_LAYERS)
                        for p_name, p in layer.named_parameters(recurse=False)}
        self._stamp: object = None
        self._cast: dict[str, torch.Tensor] = {}

    def params(self, stamp: object) -> dict[str, torch.Tensor]:
        if stamp is None or stamp != self._stamp:
            with torch.no_grad():
                self._cast = {name: p.detach().to(self.dtype) for name, p in self.weights.items()}
            self._stamp = stamp
        return self._cast
