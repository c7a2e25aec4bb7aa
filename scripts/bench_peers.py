"""genclust vs the authors' public code: one training iteration at the same architecture, batch and update ratio.

    python scripts/bench_peers.py --peer-dir <HC-MGAN checkout> --peer-dir <clusterGAN checkout> \\
        --threads 2 --repeats 3 --out outputs/bench_peers/run

Cases (``--case``, default: every case whose peer checkout is given):

* ``hc_raw``: HC-MGAN raw split at the FMNIST root (70k train+test), batch 100 real + 2 x 100 generated,
  1 D + 1 C-head + 1 G update per iteration; peer: ``MGANTrainer.train_on_epoch`` of dmdmello/HC-MGAN.
* ``hc_ref``: HC-MGAN refinement at the root (50/50 stand-in memberships), both GAN groups (2 generators each,
  fakes drawn twice) per iteration; peer: ``GANGroupsTrainer.train_on_epoch``.
* ``clustergan``: ClusterGAN, MNIST settings (batch 64, WGAN-GP, 5 critic steps per G+E step) on the 10k
  MNIST test images; peer: the training loop of zhampel/clusterGAN ``train.py`` (``-w``, n_skip_iter 5).

Peer code is never part of this project. Get a checkout and pass its path with ``--peer-dir`` (repeatable; the
kind is recognised from its files):

    git clone https://github.com/dmdmello/HC-MGAN    /tmp/peers/hcmgan
    git clone https://github.com/zhampel/clusterGAN  /tmp/peers/clustergan

Both peers import pandas (HC-MGAN also seaborn), which genclust does not depend on: install them into a separate
folder, ``pip install --target /tmp/peers/pylib --no-deps pandas seaborn``, and pass ``--peer-pythonpath
/tmp/peers/pylib`` (it is put on PYTHONPATH of the peer processes only).

The peers' CPU patches (shared/anchors/peers.md §1) are applied at run time in the peer process, the checkout is
never modified: ``torch.cuda.FloatTensor/LongTensor`` resolve to the CPU types and ``torch.cuda.set_device`` is a
no-op in the peer modules' namespace (a proxy of ``torch``), ``Tensor.cuda()`` / ``Module.cuda()`` are no-ops,
pandas' short option name ``max_columns`` is mapped to ``display.max_columns``. zhampel's ``train.py`` keeps
its loop in ``main()`` with ``n_skip_iter = 1`` a local constant, so no attribute can be patched: the file is
parsed and two nodes of ``main`` are changed in memory before it is compiled (``n_skip_iter = 5`` and
``d_loss.backward(inputs=list(discriminator.parameters()))``, the modern-PyTorch fix of peers.md §1).

Method: every (case, side) runs in its own subprocess, genclust and peer alternately (the order flips every
repeat), ``--repeats`` times, with the same interpreter, torch and ``--threads`` (torch.set_num_threads and
OMP/MKL_NUM_THREADS). One iteration = one generator update with the updates that go with it; its time is the wall
time from one iteration's start to the next (data loading included, on both sides), within one epoch. Each
process reports the median over its timed iterations; the table gives min/median/max of those over repeats.
The speed ratio is paired: each repeat's genclust process against the peer process next to it (same minutes of
a host whose speed drifts), then the median (min-max) over repeats; the ratio of the two sides' medians follows.
Images/s = real images per iteration / s per iteration (identical per iteration on both sides); "all img/s" counts
every real and generated image once (peers.md §2). Peak RSS: the process's maximum resident set (os.wait4, like
``/usr/bin/time -v``; DataLoader workers count as separate processes). Model FLOPs per iteration are counted with
``torch.utils.flop_counter.FlopCounterMode`` on the first (warm-up, untimed) iteration of each side; MFU =
FLOPs per iteration / s per iteration / the matmul peak measured here with the same threads (fp32 and bf16
``torch.mm``). genclust's side reuses ``scripts/benchmark.py`` (Hydra composition, the Lightning fit and its
stop machinery).

On a GPU (``--device cuda``): both sides train on the first CUDA device. The peers then run their own CUDA code
unpatched (only the pandas option name is mapped); genclust's side adds ``trainer.accelerator=gpu
trainer.devices=1``. Every iteration boundary waits for the device (``torch.cuda.synchronize``), so an iteration's
time includes its queued kernels; the matmul peak is a ``torch.mm`` of ``--peak-n`` (default 8192 on CUDA) timed
over groups of products, fp32 at the default TF32 setting (off for matmuls; cuDNN's convolutions default to TF32 on
both sides, which the table's first line says) and bf16; each process
also reports its peak CUDA memory (``torch.cuda.max_memory_allocated``). ``scripts/device_check.sh`` runs this on a
lent GPU machine.

Architecture: identical on both sides with the overrides in ``GENCLUST_OVERRIDES`` (equal parameter counts in
the table, up to the port's BatchNorm gammas). For ClusterGAN that means genclust's D/E at the port's unpadded
convs (``method.nets.critic.conv_padding=valid``); genclust's default is the paper's 'SAME' padding, and
``--clustergan-paper-layout`` adds that configuration as an extra genclust row (about 1.8x the FLOPs). Remaining
differences are printed under the table (``MISMATCHES``).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CASES = ("hc_raw", "hc_ref", "clustergan")
PEER_OF = {"hc_raw": "hcmgan", "hc_ref": "hcmgan", "clustergan": "clustergan"}
HOW_TO_GET = {
    "hcmgan": "git clone https://github.com/dmdmello/HC-MGAN <dir> (or the fetch tool: github:dmdmello/HC-MGAN)",
    "clustergan": "git clone https://github.com/zhampel/clusterGAN <dir> (or the fetch tool: github:zhampel/clusterGAN)",
}
# (warm-up iterations, timed iterations) per case; the first warm-up iteration is the FLOP-counted one.
DEFAULT_ITERS = {"hc_raw": (3, 15), "hc_ref": (2, 8), "clustergan": (4, 24)}
CG_N_CRITIC = 5  # ClusterGAN paper / official code: 5 critic steps per generator step (port ships 1)
CG_BATCH = 64

# genclust at the peer's settings. HC-MGAN: the authors' fmnist.py (peers.md §3.1; the overrides are the ones
# configs/experiment/hc_mgan_fmnist.yaml names for "the authors' fmnist.py", plus the code's lambda^2, averaged
# cross term and per-group fake draws). ClusterGAN: paper §6.2 MNIST config + the port's LeakyReLU and per-sample
# GP interpolation (cost-neutral) and the port's unpadded D/E convs (genclust's default is the paper's 'SAME').
GENCLUST_OVERRIDES = {
    "hc_raw": ["experiment=hc_mgan_fmnist", "method.nets.generator.g_channels=256", "method.z_prior=uniform11",
               "method.raw_split.lambda_squared=true", "method.raw_split.epochs=150", "method.refinement.epochs=150"],
    "hc_ref": ["experiment=hc_mgan_fmnist", "method.nets.generator.g_channels=256", "method.z_prior=uniform11",
               "method.raw_split.lambda_squared=true", "method.raw_split.epochs=150", "method.refinement.epochs=150",
               "method.refinement.gens_per_group=2", "method.refinement.fake_draw=per_group",
               "method.refinement.cls_reduction=mean"],
    "clustergan": ["method=clustergan", "dataset=mnist_test", "method.latent_dim=30", "method.n_critic=5",
                   "method.batch_size=64", "method.nets.generator.act=lrelu",
                   "method.gradient_penalty.per_sample_alpha=true", "method.optim.generator.weight_decay=2.5e-5",
                   "method.nets.critic.conv_padding=valid"],
}
# --clustergan-paper-layout: genclust's own default D/E (paper §6.2 'SAME' padding) as an extra row
PAPER_LAYOUT = ["method.nets.critic.conv_padding=same"]
# What stays different after the overrides (cost-relevant first). Printed under the table.
MISMATCHES = {
    "hc_raw": [
        "none in architecture (G: FC 100->7x7x256, deconv 128, deconv 1; D/C trunk conv5 128-256-512 + LayerNorm; "
        "heads 1 and 2), batch (100 real + 2 x 100 fake) or updates (1 D, 1 C head, 1 G per iteration)",
        "implementation: genclust runs D on real+fake in one trunk pass and reuses the C step's trunk features for "
        "the G step; the peer makes separate passes (one extra trunk forward of the 200 fakes): fewer FLOPs "
        "for the same losses (see FLOP/it)",
        "peer draws every real batch through a fresh DataLoader iterator (PIL decode + transforms); genclust "
        "samples from tensors in memory",
    ],
    "hc_ref": [
        "none in architecture, batch or updates (2 groups x (D, C head, G), 2 generators per group, fakes drawn "
        "before each group)",
        "implementation: as hc_raw (shared trunk passes), and genclust computes the external fakes' features "
        "without a graph",
    ],
    "clustergan": [
        "architecture: none in D/E (both unpadded 4x4/2 convs, 28->13->5, FC 3200->1024: genclust's "
        "conv_padding=valid; genclust's default is the paper/official 'SAME' padding, 28->14->7, FC 6272->1024, "
        "the extra row with --clustergan-paper-layout)",
        "genclust's G BatchNorm has no scale (official TF); the port's has gamma (negligible cost)",
        "updates: both 5 critic steps + 1 G+E step per iteration, batch 64; genclust draws fresh fakes for the G "
        "step (official order), the port reuses the first critic batch's fakes and runs G with a graph on every "
        "critic batch",
    ],
}


# ============================================================================ small helpers (tested)
class _GlobalOnly:
    """Stands in for FlopCounterMode's ModuleTracker: per-module attribution is not needed here, and the
    tracker's backward hooks fail inside ``autograd.grad`` w.r.t. a leaf (the WGAN-GP penalty of both sides)."""

    parents = {"Global"}

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def flop_counter_mode() -> Any:
    """torch.utils.flop_counter.FlopCounterMode (its formulas: matmul/conv/attention, forward and backward),
    totals only."""
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    mode.mod_tracker = _GlobalOnly()
    return mode


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(model FLOPs of ``fn()``, its result)."""
    mode = flop_counter_mode()
    with mode:
        out = fn()
    return int(mode.get_total_flops()), out


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def n_params(modules: list[Any]) -> int:
    seen, total = set(), 0
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def host_info() -> dict[str, Any]:
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"cpu": model, "logical_cpus": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags, "amx_tile": "amx_tile" in flags, "avx512f": "avx512f" in flags}


def patch_clustergan_train(source: str, n_skip_iter: int, filename: str = "train.py") -> Any:
    """zhampel/clusterGAN ``train.py`` compiled with ``n_skip_iter = <n>`` and the critic backward restricted to
    the discriminator (``inputs=``), both inside ``main()``: locals, so no attribute patch can reach them.
    Raises ValueError (with the one-line sed to apply by hand) when the checkout no longer has those lines."""
    tree = ast.parse(source, filename)
    found = {"n_skip_iter": 0, "d_loss.backward": 0}

    class Patch(ast.NodeTransformer):
        def visit_Assign(self, node: ast.Assign) -> ast.AST:
            if any(isinstance(t, ast.Name) and t.id == "n_skip_iter" for t in node.targets):
                found["n_skip_iter"] += 1
                node.value = ast.Constant(int(n_skip_iter))
            return node

        def visit_Call(self, node: ast.Call) -> ast.AST:
            self.generic_visit(node)
            f = node.func
            if (isinstance(f, ast.Attribute) and f.attr == "backward" and isinstance(f.value, ast.Name)
                    and f.value.id == "d_loss" and not node.args
                    and not any(k.arg == "inputs" for k in node.keywords)):
                found["d_loss.backward"] += 1
                params = ast.Call(ast.Attribute(ast.Name("discriminator", ast.Load()), "parameters", ast.Load()), [], [])
                node.keywords.append(ast.keyword("inputs", ast.Call(ast.Name("list", ast.Load()), [params], [])))
            return node

    tree = ast.fix_missing_locations(Patch().visit(tree))
    if found != {"n_skip_iter": 1, "d_loss.backward": 1}:
        raise ValueError(
            f"{filename}: expected one 'n_skip_iter = ...' and one 'd_loss.backward()' in main(), found {found}; "
            "apply the two changes to your checkout by hand: sed -i -e 's/n_skip_iter = 1 #5/n_skip_iter = 5/' "
            "-e 's/d_loss.backward()/d_loss.backward(inputs=list(discriminator.parameters()))/' train.py")
    return compile(tree, filename, "exec")


def merge_overrides(base: list[str], extra: list[str]) -> list[str]:
    """``base`` with the keys that ``extra`` sets replaced by extra's values (Hydra refuses a key given twice)."""
    def key(o: str) -> str:
        return o.split("=", 1)[0].lstrip("+~")

    keys = {key(o) for o in extra}
    return [o for o in base if key(o) not in keys] + list(extra)


def peer_kind(path: Path) -> str | None:
    if (path / "clusgan" / "models.py").is_file() and (path / "train.py").is_file():
        return "clustergan"
    if (path / "tree" / "raw_split.py").is_file() and (path / "models" / "gan.py").is_file():
        return "hcmgan"
    return None


def images_per_iteration(case: str, side: str, hp: dict[str, Any]) -> tuple[int, int]:
    """(real, all) images entering the networks in one iteration, each counted once (peers.md §2)."""
    if case == "hc_raw":
        return hp["batch"], hp["batch"] + hp["n_gens"] * hp["gen_batch"]
    if case == "hc_ref":
        fakes = hp["draws"] * 2 * hp["gens_per_group"] * hp["gen_batch"]
        return 2 * hp["batch"], 2 * hp["batch"] + fakes
    real = hp["n_critic"] * hp["batch"]
    # genclust: a fresh fake batch per critic step + one for the G step; the port reuses its batch's fakes
    return real, 2 * real + (hp["batch"] if side == "genclust" else 0)


# ============================================================================ reporting
def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def summarize(case: str, runs: list[dict[str, Any]], peaks: dict[str, float]) -> dict[str, Any]:
    """One side of one case over its repeats."""
    s_it = [r["s_per_iter_median"] for r in runs]
    med = statistics.median(s_it)
    real, every = runs[0]["images_per_iter"]
    flops = runs[0].get("flops_per_iter")
    out = {"s_per_iter": spread(s_it), "real_images_per_s": real / med, "all_images_per_s": every / med,
           "real_images_per_s_range": [real / max(s_it), real / min(s_it)],
           "images_per_iter": [real, every], "peak_rss_gib": max(r["peak_rss_kib"] for r in runs) / 2**20,
           "flops_per_iter": flops, "params": runs[0].get("params"), "repeats": len(runs),
           "iters_timed": [r["iters_timed"] for r in runs], "torch": runs[0].get("torch"),
           "threads": runs[0].get("threads")}
    if runs[0].get("peak_device_bytes") is not None:
        out["peak_device_gib"] = max(r["peak_device_bytes"] for r in runs) / 2**30
    if runs[0].get("autocast") is not None:  # genclust's side: the precision that ran
        out["ran"] = "bf16 autocast" if runs[0]["autocast"] == "bf16" or str(runs[0].get("precision")).startswith(
            "bf16") else "float32"
    if flops:
        achieved = flops / med
        out["achieved_gflops"] = achieved / 1e9
        out["mfu_fp32"] = achieved / peaks["fp32"] if peaks.get("fp32") else None
        out["mfu_bf16"] = achieved / peaks["bf16"] if peaks.get("bf16") else None
    return out


CASE_TITLE = {"hc_raw": "HC-MGAN raw split (FMNIST root)", "hc_ref": "HC-MGAN refinement (FMNIST root)",
              "clustergan": "ClusterGAN (MNIST, 5:1, batch 64)"}
PEER_TITLE = {"hcmgan": "dmdmello/HC-MGAN", "clustergan": "zhampel/clusterGAN"}


def speed_ratios(side: dict[str, Any], peer: dict[str, Any], side_runs: list[dict[str, Any]],
                 peer_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """genclust / peer images/s. The headline is the median over repeats of each repeat's *paired* ratio (the
    two processes of one repeat run back to back, so a host whose speed drifts over minutes moves both); the
    ratio of the two sides' median images/s is kept beside it (it pairs processes from different minutes)."""
    per_repeat = [p["s_per_iter_median"] / g["s_per_iter_median"] for g, p in zip(side_runs, peer_runs)]
    return {"median": statistics.median(per_repeat), "per_repeat": per_repeat,
            "of_medians": side["real_images_per_s"] / peer["real_images_per_s"]}


def markdown(report: dict[str, Any]) -> str:
    h, peaks = report["host"], report["peak_gflops"]
    on_gpu = peaks.get("device") == "cuda"
    where = (f"GPU {peaks.get('gpu')} (fp32 matmuls TF32 {'on' if peaks.get('tf32') else 'off'}, cuDNN convolutions "
             f"TF32 {'on' if peaks.get('cudnn_tf32') else 'off'}, on both sides: the fp32 peak is a matmul without TF32, "
             "so conv-heavy steps can read MFU fp32 above 100%); " if on_gpu else "")
    lines = [
        f"{where}Host: {h['cpu']}, {h['logical_cpus']} logical CPUs, avx512_bf16 "
        f"{'yes' if h['avx512_bf16'] else 'no'}, amx {'yes' if h['amx_tile'] else 'no'}; torch {report['torch']}, "
        f"{report['threads']} threads; matmul peak fp32 {fmt(peaks.get('fp32', 0) / 1e9, 1)} GFLOP/s, bf16 "
        f"{fmt(peaks.get('bf16', 0) / 1e9, 1)} GFLOP/s (torch.mm {peaks.get('n')}x{peaks.get('n')}, best "
        f"{'group' if on_gpu else 'repetition'}). {report['repeats']} repeats, alternating "
        f"processes; zhampel DataLoader workers: {report.get('cg_workers', 1)} (port default 1).",
        "",
        "| case | side | params | s/iteration min / median / max | real img/s (min-max) | all img/s | peak RSS GiB "
        + ("| peak GPU GiB " if on_gpu else "")
        + "| GFLOP/it | MFU fp32 | MFU bf16 | genclust/peer img/s: median of paired repeats (min-max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if on_gpu else ""),
    ]
    for case, res in report["cases"].items():
        for side in ("genclust", "genclust_paper", "peer"):
            s = res.get(side)
            if s is None:
                continue
            name = {"genclust": "genclust", "genclust_paper": "genclust, paper's 'SAME' D/E (its default)"}.get(
                side, PEER_TITLE[PEER_OF[case]])
            sp = s["s_per_iter"]
            ratio = ""
            if side != "peer" and res.get("ratios", {}).get(side):
                r = res["ratios"][side]
                ratio = (f"**{r['median']:.2f}x** ({min(r['per_repeat']):.2f}-{max(r['per_repeat']):.2f}); "
                         f"of medians {r['of_medians']:.2f}x")
            gfl = s["flops_per_iter"] / 1e9 if s.get("flops_per_iter") else None
            lo, hi = s["real_images_per_s_range"]
            params = f"{s['params'] / 1e6:.2f}M" if s.get("params") else "-"
            lines.append(
                f"| {CASE_TITLE[case]} | {name} | {params} | {sp['min']:.3f} / {sp['median']:.3f} / {sp['max']:.3f} | "
                f"{s['real_images_per_s']:.0f} ({lo:.0f}-{hi:.0f}) | {s['all_images_per_s']:.0f} | "
                f"{s['peak_rss_gib']:.2f} | " + (f"{fmt(s.get('peak_device_gib'))} | " if on_gpu else "")
                + f"{fmt(gfl, 1)} | "
                f"{fmt(100 * s['mfu_fp32'] if s.get('mfu_fp32') else None, 1)}% | "
                f"{fmt(100 * s['mfu_bf16'] if s.get('mfu_bf16') else None, 1)}% | {ratio} |")
    lines += ["", "s/iteration: per process the median over its timed iterations (data loading included); img/s at "
              "the median; FLOP/it: torch.utils.flop_counter formulas (matmul/conv, forward + backward; elementwise, "
              "norms and optimizer steps not counted) on one iteration; MFU = FLOP/it / (s/it) / matmul peak.",
              ""]
    ran = {case: res["genclust"]["ran"] for case, res in report["cases"].items() if res.get("genclust", {}).get("ran")}
    if ran:
        lines += ["genclust ran: " + ", ".join(f"{case} {how}" for case, how in ran.items()) + " (a bf16 request runs "
                  "float32 on a CPU where bf16 is not faster: genclust.precision); the peers run float32.", ""]
    lines += ["Differences left between the two sides (after the overrides below):"]
    for case in report["cases"]:
        for m in MISMATCHES[case]:
            lines.append(f"- {case}: {m}")
        if "genclust_paper" in report["cases"][case]:
            lines.append(f"- {case}: extra row: genclust's default D/E (paper 'SAME' padding, "
                         f"`{' '.join(PAPER_LAYOUT)}`), not the peer's architecture; its ratio is not a like-for-like one")
    lines += ["", "genclust overrides: " + "; ".join(
        f"{case}: `{' '.join(report['cases'][case]['genclust_overrides'])}`" for case in report["cases"]),
        "", f"Command: `{report['command']}`"]
    return "\n".join(lines)


# ============================================================================ children
class _Done(Exception):
    """Enough iterations timed (raised from inside the training loop being timed)."""


def device_sync(device: str) -> Callable[[], None]:
    """What makes the host clock meaningful on ``device``: wait for queued CUDA kernels; nothing on the CPU."""
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def peak_device_memory(device: str) -> int | None:
    """Bytes: the process's peak CUDA allocation (None on the CPU, where peak RSS says it)."""
    if device != "cuda":
        return None
    import torch

    return int(torch.cuda.max_memory_allocated())


class Recorder:
    """Iteration boundaries (perf_counter at each iteration's start, per epoch) and the FLOP-counted first one.
    ``sync`` runs before each reading (``device_sync``), so an iteration includes its queued GPU work."""

    def __init__(self, warmup: int, iters: int, sync: Callable[[], None] = lambda: None) -> None:
        self.warmup, self.iters, self.sync = warmup, iters, sync
        self.starts: list[tuple[int, float]] = []  # (epoch, t) at the start of each iteration
        self.flops: int | None = None
        self._mode = None

    def boundary(self, epoch: int) -> None:
        """Call at the start of every iteration; raises _Done after warmup + iters complete iterations."""
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self.flops = int(self._mode.get_total_flops())
            self._mode = None
        self.sync()
        self.starts.append((epoch, time.perf_counter()))
        if len(self.durations()) >= self.warmup + self.iters:
            raise _Done
        if len(self.starts) == 1:
            self._mode = flop_counter_mode()
            self._mode.__enter__()
            self.starts[-1] = (epoch, time.perf_counter())

    def durations(self) -> list[float]:
        """Complete iterations within one epoch (an epoch's end and its hooks are never inside one)."""
        return [b[1] - a[1] for a, b in zip(self.starts, self.starts[1:]) if a[0] == b[0]]

    def timed(self) -> list[float]:
        return self.durations()[self.warmup: self.warmup + self.iters]


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def child_peak(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    _set_threads(args.threads)
    n, out = args.peak_n, {"n": args.peak_n, "device": args.device}
    sync = device_sync(args.device)
    # a GPU product of this size takes well under a millisecond: time groups of them, waiting once per group
    group = 10 if args.device == "cuda" else 1
    if args.device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
        out["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        out["cudnn_tf32"] = bool(torch.backends.cudnn.allow_tf32)  # convolutions: TF32 by default
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(n, n, dtype=dtype, device=args.device) for _ in range(2))
        for _ in range(2):
            torch.mm(a, b)
        sync()
        best, reps, start = 0.0, 0, time.perf_counter()
        while time.perf_counter() - start < args.peak_seconds or reps < 3:
            t0 = time.perf_counter()
            for _ in range(group):
                torch.mm(a, b)
            sync()
            best = max(best, group * 2.0 * n ** 3 / (time.perf_counter() - t0))  # the best group: a peak
            reps += 1
        out[name] = best
    return out


def child_genclust(args: argparse.Namespace) -> dict[str, Any]:
    """genclust's side through scripts/benchmark.py; iteration boundaries from Strategy.training_step."""
    import torch
    from pytorch_lightning.strategies.strategy import Strategy

    _set_threads(args.threads)
    sys.path.insert(0, str(ROOT / "scripts"))
    import benchmark  # noqa: E402  (scripts/benchmark.py)

    case = args.case
    overrides = merge_overrides(GENCLUST_OVERRIDES[case], list(args.genclust_overrides or []))
    tmp = Path(args.workdir)
    overrides += [f"paths.data_dir={args.data_dir}"] if args.data_dir else []
    if case.startswith("hc_"):
        overrides.append(f"method.tree_dir={tmp / 'tree'}")
    if args.device == "cuda":
        overrides = merge_overrides(overrides, ["trainer.accelerator=gpu", "trainer.devices=1"])
    rec = Recorder(args.warmup, args.iters, device_sync(args.device))
    info: dict[str, Any] = {}
    steps_per_iter = [1]
    calls = [0]
    orig_step = Strategy.training_step

    def training_step(self, *a, **k):
        module = self.lightning_module
        if calls[0] == 0:
            info["params"] = n_params([module])
            info["method"] = type(module).__name__
            # what ran: a bf16 request runs float32 where bf16 is not faster (genclust.precision)
            info["autocast"] = module.describe().get("autocast", "none")
            info["precision"] = str(module.trainer.precision)
            hp = module.hparams
            if case == "clustergan":
                steps_per_iter[0] = int(module.n_critic)
                info["hp"] = {"batch": int(hp.batch_size), "n_critic": int(module.n_critic)}
            else:
                gs = module.game_settings
                info["hp"] = {"batch": int(hp.batch_size), "gen_batch": int(gs.gen_batch_size), "n_gens": 2,
                              "gens_per_group": int(gs.gens_per_group),
                              "draws": 2 if gs.fake_draw == "per_group" else 1}
                info["stage"] = module.game.kind
        if calls[0] % steps_per_iter[0] == 0:
            rec.boundary(module.trainer.current_epoch)
        calls[0] += 1
        return orig_step(self, *a, **k)

    Strategy.training_step = training_step
    if case == "hc_ref":
        _start_genclust_at_refinement()
    jsonl = tmp / "benchmark.jsonl"
    try:
        rc = benchmark.main(["--threads", str(args.threads), "--warmup", "0", "--steps", str(10 ** 7),
                             "--out", str(jsonl), *overrides])
        raise RuntimeError(f"benchmark.py ended (rc {rc}) before {args.warmup + args.iters} iterations")
    except _Done:
        pass
    if case == "hc_ref" and info.get("stage") != "refine":
        raise RuntimeError(f"hc_ref timed a {info.get('stage')} stage, not a refinement")
    real, every = images_per_iteration(case, "genclust", info["hp"])
    return {"side": args.side, "case": case, "overrides": overrides,
            "iter_s": rec.timed(),
            "flops_per_iter": rec.flops, "images_per_iter": [real, every], "params": info["params"],
            "hp": info["hp"], "steps_per_iter": steps_per_iter[0], "torch": torch.__version__,
            "threads": torch.get_num_threads(), "autocast": info.get("autocast"), "precision": info.get("precision")}


def _start_genclust_at_refinement() -> None:
    """HC-MGAN: make the first stage of the fit a refinement of the root (as if its raw split had finished
    with 50/50 memberships, peers.md §2's stand-in), through the method's own resume-from-<tree>/in_progress."""
    from genclust.methods.hc_mgan import module as hc

    orig = hc.HCMGAN._restore

    def restore(self, n_fit, ckpt_path):
        orig(self, n_fit, ckpt_path)
        k = self.tree.next_node()
        s_k = self.tree.memberships[k]
        s_l = 0.5 * s_k
        state = {"split": self.tree.n_splits, "node": k, "stage": 0, "s_l": s_l, "s_m": s_k - s_l,
                 "changes": [], "attempts": [1], "seconds": [0.0], "early_stopped": False, "done": False,
                 "members": [], "gens": [],
                 "arch": {"member": self.make_critic().member_arch, "generator": self.make_generator().arch}}
        self._store.save_in_progress(state)

    hc.HCMGAN._restore = restore


# ---------------------------------------------------------------------------- peer runtime patches
def pandas_patch() -> None:
    """pandas >= 1.4 rejects the short option name the HC-MGAN code uses at the end of a stage."""
    try:
        import pandas as pd
    except ImportError:
        return
    set_option = pd.set_option

    def set_option_full(key: Any, *a: Any, **k: Any) -> Any:
        if key in ("max_columns", "max_colwidth"):
            key = "display." + key
        return set_option(key, *a, **k)

    pd.set_option = set_option_full


def peer_patches(peer_dir: Path, device: str) -> Callable[..., None]:
    """The peer process's runtime patches for ``device``: on the CPU, ``cpu_patches``; on a GPU the peer's own
    CUDA code runs as written and only pandas' option name is mapped (``apply`` is then a no-op)."""
    if device == "cpu":
        return cpu_patches(peer_dir)
    pandas_patch()
    return lambda extra=None: None


def cpu_patches(peer_dir: Path) -> Callable[[], None]:
    """Runtime CPU patches (peers.md §1) for code that hard-codes CUDA; returns ``apply()``, to call after the
    peer modules are imported (it swaps their ``torch`` global for a proxy)."""
    import types

    import torch

    class CpuCuda(types.ModuleType):
        FloatTensor = torch.FloatTensor
        LongTensor = torch.LongTensor
        DoubleTensor = torch.DoubleTensor
        IntTensor = torch.IntTensor
        BoolTensor = torch.BoolTensor

        def __getattr__(self, name: str) -> Any:
            return getattr(torch.cuda, name)

        @staticmethod
        def set_device(*_a: Any, **_k: Any) -> None:
            return None

        @staticmethod
        def is_available() -> bool:
            return False

    class CpuTorch(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(torch, name)

    proxy = CpuTorch("torch")
    proxy.cuda = CpuCuda("torch.cuda")
    torch.Tensor.cuda = lambda self, *a, **k: self  # .cuda() on tensors and modules: stay on the CPU
    torch.nn.Module.cuda = lambda self, device=None: self
    pandas_patch()
    root = str(peer_dir.resolve())

    def apply(extra: dict[str, Any] | None = None) -> None:
        for mod in list(sys.modules.values()):
            f = getattr(mod, "__file__", None) or ""
            if f.startswith(root) and getattr(mod, "torch", None) is torch:
                mod.torch = proxy
        if extra is not None and extra.get("torch") is torch:
            extra["torch"] = proxy

    return apply


def _peer_defaults(script: Path) -> argparse.Namespace:
    """The argparse defaults of a peer entry script (e.g. HC-MGAN fmnist.py), without running its training:
    the script runs until its ``parse_args()``, which returns the defaults by raising."""
    import runpy

    class Got(Exception):
        pass

    orig = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise Got(orig(self, [], namespace))

    argparse.ArgumentParser.parse_args = parse_args
    try:
        runpy.run_path(str(script), run_name="__bench_defaults__")
    except Got as got:
        return got.args[0]
    finally:
        argparse.ArgumentParser.parse_args = orig
    raise RuntimeError(f"{script} did not call parse_args()")


def child_hcmgan(args: argparse.Namespace) -> dict[str, Any]:
    import copy

    import torch

    _set_threads(args.threads)
    peer = Path(args.peer_dir).resolve()
    sys.path.insert(0, str(peer))
    apply = peer_patches(peer, args.device)
    hp_args = _peer_defaults(peer / "fmnist.py")  # imports the repo's modules on the way
    apply()
    from tree.raw_split import MGANTrainer
    from tree.refinement import GANGroupsTrainer
    from tree.tree import Node
    from utils.data import create_dataloader, merge_dataloaders
    from utils.others import create_gans, zero_dict_values

    apply()
    hp_args.dataset_path = str(Path(args.peer_data))
    # fmnist.py: train + test merged, membership-weighted i.i.d. sampling
    dl_train = create_dataloader(dataset="fmnist", test=False, batch_size=hp_args.batch_size_real,
                                 path=hp_args.dataset_path)
    dl_test = create_dataloader(dataset="fmnist", test=True, batch_size=hp_args.batch_size_real,
                                path=hp_args.dataset_path)
    dl = merge_dataloaders(dl_train, dl_test)
    root = Node(hp_args.root_node_name, dl.sampler.weights, str(Path(args.workdir) / "logs"))
    rec = Recorder(args.warmup, args.iters, device_sync(args.device))
    torch.manual_seed(0)
    if args.case == "hc_raw":
        # tree.py raw_split_tree_node: a copy of the loader sampling with the node's memberships
        dl_k = copy.deepcopy(dl)
        dl_k.sampler.weights = root.cluster_probs[-1]
        [mgan] = create_gans(hp_args, no_gans=1, no_g_paths=2)
        trainer = MGANTrainer(dl_k, mgan, amp_enable=hp_args.amp_enable, prior_distribution="uniform", node_k=root)
        noise = hp_args.noise_start * (1 - 1 / hp_args.epochs_raw_split)  # epoch 1 of the schedule
        trainer.no_batches = 1  # train_on_epoch = one iteration

        def one_iteration() -> None:
            trainer.train_on_epoch(zero_dict_values(copy.copy(mgan.metrics_dict)), noise, hp_args.batch_size_gen)

        nets = [mgan.gen_set, mgan.disc, mgan.clasf]
        hp = {"batch": hp_args.batch_size_real, "gen_batch": hp_args.batch_size_gen, "n_gens": 2}
    else:
        # tree.py refine_tree_nodes: children of the root (50/50 stand-in memberships), one loader per child
        root.create_children(0.5 * root.cluster_probs[-1].numpy(), 0.5 * root.cluster_probs[-1].numpy())
        dl_l, dl_m = copy.deepcopy(dl), copy.deepcopy(dl)
        dl_l.sampler.weights = root.child_left.cluster_probs[-1]
        dl_m.sampler.weights = root.child_right.cluster_probs[-1]
        gan_l, gan_m = create_gans(hp_args, no_gans=2)  # refinement.py L414 (2 generators per group)
        trainer = GANGroupsTrainer(dl_l, dl_m, gan_l, gan_m, amp_enable=hp_args.amp_enable,
                                   prior_distribution="uniform", node_k=root)
        noise = hp_args.noise_start * (1 - 1 / hp_args.epochs_refinement)
        trainer.no_batches = 1

        def one_iteration() -> None:
            trainer.train_on_epoch(zero_dict_values(copy.copy(gan_l.metrics_dict)),
                                   zero_dict_values(copy.copy(gan_m.metrics_dict)), noise, hp_args.batch_size_gen)

        nets = [g for gan in (gan_l, gan_m) for g in (gan.gen_set, gan.disc, gan.clasf)]
        hp = {"batch": hp_args.batch_size_real, "gen_batch": hp_args.batch_size_gen,
              "gens_per_group": len(gan_l.gen_set.paths), "draws": 2}
    try:
        while True:
            rec.boundary(0)
            one_iteration()
    except _Done:
        pass
    real, every = images_per_iteration(args.case, "peer", hp)
    settings = {k: getattr(hp_args, k) for k in ("nf_g", "nf_d", "latent_dim", "batch_size_real", "batch_size_gen",
                                                   "noise_start", "diversity_parameter_g", "lr_d", "lr_c", "lr_g",
                                                   "shared_features_across_ref", "amp_enable")}
    return {"side": "peer", "case": args.case, "iter_s": rec.timed(), "flops_per_iter": rec.flops,
            "images_per_iter": [real, every], "params": n_params(nets), "hp": hp, "peer_settings": settings,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def child_clustergan(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    _set_threads(args.threads)
    peer = Path(args.peer_dir).resolve()
    sys.path.insert(0, str(peer))
    apply = peer_patches(peer, args.device)
    path = peer / "train.py"
    code = patch_clustergan_train(path.read_text(), CG_N_CRITIC, str(path))
    ns: dict[str, Any] = {"__name__": "clustergan_train", "__file__": str(path)}
    exec(code, ns)  # defines main() and runs the file's imports (clusgan.*)
    apply(ns)
    tmp = Path(args.workdir)
    ns["DATASETS_DIR"] = str(Path(args.peer_data))  # <peer-data>/mnist/MNIST/raw
    ns["RUNS_DIR"] = str(tmp / "runs")
    rec = Recorder(args.warmup, args.iters, device_sync(args.device))
    nets: list[Any] = []
    for name in ("Generator_CNN", "Encoder_CNN", "Discriminator_CNN"):
        cls = ns[name]

        def build(*a: Any, _cls: Any = cls, **k: Any) -> Any:
            net = _cls(*a, **k)
            nets.append(net)
            return net

        ns[name] = build
    get_dataloader = ns["get_dataloader"]
    epoch = [-1]

    class TimedLoader:
        """The port's training DataLoader; an iteration starts at the batch that carries the G+E step."""

        def __init__(self, loader: Any) -> None:
            self.loader = loader
            self.full = len(loader.dataset) // loader.batch_size

        def __len__(self) -> int:
            return len(self.loader)

        def __iter__(self):
            epoch[0] += 1
            for i, batch in enumerate(self.loader):
                if i % CG_N_CRITIC == 0 and i <= self.full:  # groups of full batches only
                    rec.boundary(epoch[0])
                yield batch

    def timed_get_dataloader(*a: Any, **k: Any) -> Any:
        loader = get_dataloader(*a, **k)
        return TimedLoader(loader) if k.get("train_set", True) else loader

    ns["get_dataloader"] = timed_get_dataloader
    torch.manual_seed(0)
    sys.argv = ["train.py", "-r", "bench", "-s", "mnist", "-b", str(CG_BATCH), "-n", "100000", "-w",
                "-k", str(args.cg_workers)]
    try:
        ns["main"]()
        raise RuntimeError("the port's training ended before the iterations were timed")
    except _Done:
        pass
    hp = {"batch": CG_BATCH, "n_critic": CG_N_CRITIC, "num_workers": args.cg_workers}
    real, every = images_per_iteration("clustergan", "peer", hp)
    return {"side": "peer", "case": "clustergan", "iter_s": rec.timed(), "flops_per_iter": rec.flops,
            "images_per_iter": [real, every], "params": n_params(nets), "hp": hp, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def run_child(args: argparse.Namespace) -> int:
    fn = {"peak": child_peak, "genclust": child_genclust, "peer": None}[args.child]
    if args.child == "peer":
        fn = child_clustergan if args.case == "clustergan" else child_hcmgan
    result = fn(args)
    result["peak_device_bytes"] = peak_device_memory(args.device)  # every side, same reading
    if "iter_s" in result:
        if not result["iter_s"]:
            raise RuntimeError("no iteration was timed")
        result["iters_timed"] = len(result["iter_s"])
        result["s_per_iter_median"] = statistics.median(result["iter_s"])
    Path(args.result).write_text(json.dumps(result, indent=1))
    return 0


# ============================================================================ data for the peers
def prepare_peer_data(out: Path, data_dir: Path | None, cases: list[str]) -> None:
    """torchvision layouts the peers load with download=True (a no-op when the files exist):
    <out>/FashionMNIST/raw/ (60k + 10k) for HC-MGAN, <out>/mnist/MNIST/raw/ for the zhampel port, whose
    train-* files are links to the 10k test files (the only MNIST part here; peers.md §1). Files come from
    genclust's own lookup (paths.data_dir, flat *-ubyte.gz folders, Debian, ...)."""
    import gzip
    import shutil

    from genclust.data import sources

    base = data_dir or Path(os.environ.get("GENCLUST_DATA_DIR", ROOT / "data"))
    jobs = []
    if any(c.startswith("hc_") for c in cases):
        jobs.append(("fashion_mnist", out / "FashionMNIST" / "raw", ("train", "test"), {}))
    if "clustergan" in cases:
        jobs.append(("mnist", out / "mnist" / "MNIST" / "raw", ("test",), {"train": "test"}))
    for which, raw, parts, links in jobs:
        raw.mkdir(parents=True, exist_ok=True)
        folders = sources._candidate_folders(base, which)
        for part in parts:
            for stem in sources.IDX_NAMES[part]:
                dst = raw / stem
                if dst.is_file():
                    continue
                src = sources._find_file(folders, stem)
                if src is None:
                    raise SystemExit(f"bench_peers: {which} {part} ({stem}[.gz]) not found in "
                                     f"{', '.join(map(str, folders))}; pass --data-dir <folder with the IDX files>")
                opener = gzip.open if src.suffix == ".gz" else open
                with opener(src, "rb") as fi, open(dst.with_suffix(".tmp"), "wb") as fo:
                    shutil.copyfileobj(fi, fo)
                dst.with_suffix(".tmp").replace(dst)
        for part, target in links.items():
            for stem, tstem in zip(sources.IDX_NAMES[part], sources.IDX_NAMES[target]):
                if not (raw / stem).exists():
                    (raw / stem).symlink_to(tstem)


# ============================================================================ parent
def spawn(argv: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, int, float]:
    """(exit status, peak RSS KiB of the process and its waited-for children, wall s)."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, int(usage.ru_maxrss), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--peer-dir", type=Path, action="append", default=[],
                        help="a checkout of dmdmello/HC-MGAN or zhampel/clusterGAN (repeatable)")
    parser.add_argument("--case", action="append", choices=CASES, help="default: every case with a peer checkout")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default per case)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per process (default per case)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="IDX files for both sides (default: $GENCLUST_DATA_DIR or ./data, genclust's lookup)")
    parser.add_argument("--peer-data", type=Path, default=Path(tempfile.gettempdir()) / "bench_peers" / "data",
                        help="where the peers' torchvision layout is built")
    parser.add_argument("--peer-pythonpath", default="",
                        help="extra PYTHONPATH for the peer processes only (pandas, seaborn)")
    parser.add_argument("--cg-workers", type=int, default=1, help="zhampel DataLoader workers (port default 1)")
    parser.add_argument("--out", type=Path, default=None, help="PREFIX: writes PREFIX.json and PREFIX.md")
    parser.add_argument("--child-timeout", type=float, default=1200.0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where both sides train (cuda: the first GPU; the peers' own CUDA code, unpatched)")
    parser.add_argument("--peak-n", type=int, default=None,
                        help="matrix size of the matmul peak (default 2048 on the CPU, 8192 on CUDA)")
    parser.add_argument("--peak-seconds", type=float, default=3.0)
    parser.add_argument("--keep-work", action="store_true", help="keep the per-process folders (logs) on success")
    parser.add_argument("--genclust-overrides", nargs="*", default=[], help="extra Hydra overrides (genclust side)")
    parser.add_argument("--clustergan-paper-layout", action="store_true",
                        help="add a genclust row at its default D/E (the paper's 'SAME' padding; not the port's)")
    parser.add_argument("--side", default="genclust", help=argparse.SUPPRESS)
    # child mode (internal)
    parser.add_argument("--child", choices=("peak", "genclust", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--peer-dir-one", dest="peer_dir_one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.peak_n is None:
        args.peak_n = 8192 if args.device == "cuda" else 2048
    if args.child:
        args.case = args.case[0] if isinstance(args.case, list) else args.case
        args.peer_dir = args.peer_dir_one
        return run_child(args)

    peers: dict[str, Path] = {}
    for p in args.peer_dir:
        kind = peer_kind(p)
        if kind is None:
            print(f"bench_peers: {p} is not a checkout of dmdmello/HC-MGAN or zhampel/clusterGAN", file=sys.stderr)
            return 2
        peers[kind] = p.resolve()
    cases = args.case or [c for c in CASES if PEER_OF[c] in peers]
    missing = sorted({PEER_OF[c] for c in (args.case or CASES)} - set(peers)) if args.case or not peers else []
    if missing:
        print("bench_peers: no --peer-dir for " + " nor ".join(f"{PEER_TITLE[m]} (get it: {HOW_TO_GET[m]})"
                                                               for m in missing)
              + "; pass each checkout with --peer-dir <dir>", file=sys.stderr)
        return 2

    prepare_peer_data(args.peer_data, args.data_dir, cases)
    workroot = Path(tempfile.mkdtemp(prefix="bench_peers_"))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED="1", WANDB_MODE="offline", MPLBACKEND="Agg")
    if args.data_dir:
        env["GENCLUST_DATA_DIR"] = str(args.data_dir)
    peer_env = dict(env)
    peer_env["PYTHONPATH"] = os.pathsep.join(x for x in (args.peer_pythonpath, env.get("PYTHONPATH", "")) if x)
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--threads", str(args.threads), "--device", args.device]

    def child(kind: str, case: str | None, rep: int, extra: list[str], child_env: dict[str, str],
              tag: str = "") -> dict[str, Any]:
        wd = workroot / f"{case or kind}_{kind}{tag}_{rep}"
        wd.mkdir(parents=True)
        result = wd / "result.json"
        argv_c = me + ["--child", kind, "--result", str(result), "--workdir", str(wd), *common, *extra]
        if case:
            argv_c += ["--case", case]
        rc, rss, wall = spawn(argv_c, child_env, wd / "log.txt", args.child_timeout)
        if rc != 0 or not result.is_file():
            tail = (wd / "log.txt").read_text()[-3000:]
            raise SystemExit(f"bench_peers: {kind} {case or ''} failed (exit {rc}); log {wd / 'log.txt'}:\n{tail}")
        out = json.loads(result.read_text())
        out.update(peak_rss_kib=rss, wall_s=wall)
        return out

    print(f"bench_peers: measuring the matmul peak ({args.threads} threads)", file=sys.stderr)
    peaks = child("peak", None, 0, ["--peak-n", str(args.peak_n), "--peak-seconds", str(args.peak_seconds)], env)
    report: dict[str, Any] = {
        "command": "python scripts/bench_peers.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "host": host_info(), "threads": args.threads, "repeats": args.repeats, "peak_gflops": peaks,
        "cg_workers": args.cg_workers,
        "date": time.strftime("%Y-%m-%d %H:%M"), "cases": {}}
    import torch

    report["torch"] = torch.__version__
    for case in cases:
        warm, iters = DEFAULT_ITERS[case]
        warm = args.warmup if args.warmup is not None else warm
        iters = args.iters if args.iters is not None else iters
        it_args = ["--warmup", str(max(warm, 1)), "--iters", str(iters)]
        g_extra = it_args + (["--data-dir", str(args.data_dir)] if args.data_dir else [])
        if args.genclust_overrides:
            g_extra += ["--genclust-overrides", *args.genclust_overrides]
        p_extra = it_args + ["--peer-dir-one", str(peers[PEER_OF[case]]), "--peer-data", str(args.peer_data),
                             "--cg-workers", str(args.cg_workers)]
        sides = ["genclust", "peer"] + (["genclust_paper"] if case == "clustergan" and args.clustergan_paper_layout
                                        else [])
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for rep in range(args.repeats):
            for side in sides if rep % 2 == 0 else sides[::-1]:
                print(f"bench_peers: {case} repeat {rep + 1}/{args.repeats}: {side}", file=sys.stderr)
                if side == "genclust":
                    r = child("genclust", case, rep, g_extra, env)
                elif side == "genclust_paper":
                    # g_extra ends with the --genclust-overrides list when there is one: extend it
                    extra = ["--side", side, *g_extra] + (
                        PAPER_LAYOUT if "--genclust-overrides" in g_extra else ["--genclust-overrides", *PAPER_LAYOUT])
                    r = child("genclust", case, rep, extra, env, tag="paper")
                else:
                    r = child("peer", case, rep, p_extra, peer_env)
                print(f"bench_peers:   {r['s_per_iter_median']:.3f} s/it over {r['iters_timed']} iterations, "
                      f"peak RSS {r['peak_rss_kib'] / 2**20:.2f} GiB", file=sys.stderr)
                runs[side].append(r)
        res: dict[str, Any] = {side: summarize(case, rs, peaks) for side, rs in runs.items()}
        res["ratios"] = {side: speed_ratios(res[side], res["peer"], runs[side], runs["peer"])
                         for side in sides if side != "peer"}
        res["ratio"] = res["ratios"]["genclust"]["median"]
        res["genclust_overrides"] = merge_overrides(GENCLUST_OVERRIDES[case], list(args.genclust_overrides))
        res["mismatches"] = MISMATCHES[case]
        res["runs"] = runs
        report["cases"][case] = res
    md = markdown(report)
    print(md)
    if args.keep_work:
        print(f"bench_peers: per-process logs in {workroot}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(workroot, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
        args.out.with_suffix(".md").write_text(md + "\n")
        print(f"bench_peers: wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
