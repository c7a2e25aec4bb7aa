"""scripts/bench_peers.py without the peer checkouts: the no-peer error, the runtime CPU patches on a stand-in
module, the train.py rewrite, FLOP counting (incl. a WGAN-GP penalty), iteration bookkeeping, the table, the data
layout, and (slow) genclust's side on digits."""

import gzip
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "scripts" / "bench_peers.py")
bp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bp)


def test_without_a_peer_checkout_it_says_how_to_get_one_in_one_line(capsys):
    assert bp.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "git clone https://github.com/zhampel/clusterGAN" in err
    assert "git clone https://github.com/dmdmello/HC-MGAN" in err and "--peer-dir" in err
    assert bp.main(["--case", "clustergan"]) == 2
    err = capsys.readouterr().err
    assert "zhampel/clusterGAN" in err and "HC-MGAN" not in err


def test_a_folder_that_is_no_peer_checkout_is_refused(tmp_path, capsys):
    assert bp.main(["--peer-dir", str(tmp_path)]) == 2
    assert "is not a checkout" in capsys.readouterr().err
    (tmp_path / "clusgan").mkdir()
    (tmp_path / "clusgan" / "models.py").write_text("")
    (tmp_path / "train.py").write_text("")
    assert bp.peer_kind(tmp_path) == "clustergan"


def test_cpu_patches_make_cuda_hardcoded_code_run_on_the_cpu(tmp_path, monkeypatch):
    # what the peers do: CUDA tensor types, .cuda() on tensors and modules, set_device
    peer = tmp_path / "peer"
    peer.mkdir()
    (peer / "fake_peer_mod.py").write_text(
        "import torch\n"
        "def run():\n"
        "    torch.cuda.set_device(0)\n"
        "    x = torch.cuda.FloatTensor([1.0, 2.0]).cuda()\n"
        "    y = torch.cuda.FloatTensor([0, 1]).type(torch.cuda.LongTensor)\n"
        "    net = torch.nn.Linear(2, 1).cuda()\n"
        "    return net(x[None]), y\n")
    monkeypatch.setattr(torch.Tensor, "cuda", torch.Tensor.cuda)  # restored after the test
    monkeypatch.setattr(torch.nn.Module, "cuda", torch.nn.Module.cuda)
    monkeypatch.syspath_prepend(str(peer))
    apply = bp.cpu_patches(peer)
    import fake_peer_mod

    apply()
    out, y = fake_peer_mod.run()
    assert out.device.type == "cpu" and y.dtype == torch.long
    assert torch is not fake_peer_mod.torch and torch.cuda is not fake_peer_mod.torch.cuda  # only its namespace
    sys.modules.pop("fake_peer_mod")


FAKE_TRAIN = """
class Loss:
    kw = None
    def backward(self, **kw):
        Loss.kw = kw

class Net:
    def parameters(self):
        return iter([1, 2])

def main():
    n_skip_iter = 1 #5
    discriminator = Net()
    ge_loss, d_loss = Loss(), Loss()
    ge_loss.backward(retain_graph=True)
    d_loss.backward()
    return n_skip_iter, Loss.kw
"""


def test_clustergan_train_is_rewritten_in_memory():
    ns = {}
    exec(bp.patch_clustergan_train(FAKE_TRAIN, 5), ns)
    n_skip, kw = ns["main"]()
    assert n_skip == 5 and kw == {"inputs": [1, 2]}
    with pytest.raises(ValueError, match="sed -i"):
        bp.patch_clustergan_train(FAKE_TRAIN.replace("d_loss.backward()", "pass"), 5)


def test_flops_of_a_linear_layer_and_of_a_gradient_penalty():
    net = torch.nn.Linear(10, 20, bias=False)
    flops, _ = bp.count_flops(lambda: net(torch.randn(4, 10)))
    assert flops == 2 * 4 * 10 * 20

    def penalty():  # autograd.grad w.r.t. a leaf: FlopCounterMode's module tracker fails here
        x = torch.randn(4, 10, requires_grad=True)
        (g,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
        g.pow(2).sum().backward()

    flops, _ = bp.count_flops(penalty)
    assert flops >= 3 * 2 * 4 * 10 * 20


def test_recorder_times_whole_iterations_within_an_epoch():
    rec = bp.Recorder(warmup=1, iters=2)
    with pytest.raises(bp._Done):
        for epoch in (0, 0, 1, 1, 1, 1):  # an epoch change never falls inside a timed iteration
            rec.boundary(epoch)
    assert len(rec.durations()) == 3 and len(rec.timed()) == 2
    assert rec.flops is not None  # the first iteration is the counted one
    assert bp.spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}


def test_images_per_iteration_and_overrides():
    raw = {"batch": 100, "gen_batch": 100, "n_gens": 2}
    ref = {"batch": 100, "gen_batch": 100, "gens_per_group": 2, "draws": 2}
    cg = {"batch": 64, "n_critic": 5}
    assert bp.images_per_iteration("hc_raw", "peer", raw) == (100, 300)  # peers.md §2
    assert bp.images_per_iteration("hc_ref", "peer", ref) == (200, 1000)
    assert bp.images_per_iteration("clustergan", "peer", cg) == (320, 640)
    assert bp.images_per_iteration("clustergan", "genclust", cg) == (320, 704)
    assert bp.merge_overrides(["dataset=mnist_test", "method.n_critic=5"], ["dataset=digits"]) == [
        "method.n_critic=5", "dataset=digits"]


def test_markdown_table_has_both_sides_the_ratio_and_the_mismatches():
    def run(s, flops, **ran):
        return {"s_per_iter_median": s, "images_per_iter": [100, 300], "peak_rss_kib": 2 ** 20, "iters_timed": 5,
                "flops_per_iter": flops, "params": 7803141, "torch": "x", "threads": 2, **ran}

    peaks = {"fp32": 100e9, "bf16": 200e9, "n": 2048}
    fallback = {"autocast": "none", "precision": "32-true"}  # bf16 requested, float32 ran (genclust.precision)
    g = bp.summarize("hc_raw", [run(1.0, 50e9, **fallback), run(1.2, 50e9, **fallback)], peaks)
    p = bp.summarize("hc_raw", [run(2.0, 60e9), run(2.4, 60e9)], peaks)
    assert g["s_per_iter"]["median"] == pytest.approx(1.1) and g["mfu_fp32"] == pytest.approx(50 / 1.1 / 100)
    report = {"host": bp.host_info(), "peak_gflops": peaks, "torch": "x", "threads": 2, "repeats": 2,
              "command": "python scripts/bench_peers.py", "cases": {"hc_raw": {
                  "genclust": g, "peer": p, "genclust_overrides": ["experiment=hc_mgan_fmnist"],
                  "ratios": {"genclust": bp.speed_ratios(g, p, [run(1.0, 0), run(1.2, 0), run(1.1, 0)],
                                                         [run(2.0, 0), run(2.0, 0), run(2.6, 0)])}}}}
    md = bp.markdown(report)
    assert "| HC-MGAN raw split (FMNIST root) | genclust | 7.80M | 1.000 / 1.100 / 1.200 |" in md
    # paired per repeat: 2.0, 1.67, 2.36 -> median 2.0; of medians: 2.2 / 1.1
    assert "dmdmello/HC-MGAN" in md and "**2.00x** (1.67-2.36); of medians 2.00x" in md
    assert md.count("- hc_raw:") == len(bp.MISMATCHES["hc_raw"]) and "avx512_bf16" in md
    assert "genclust ran: hc_raw float32" in md and "ran" not in p  # the peer side records no precision


def test_peer_data_layout_from_flat_idx_files(tmp_path):
    src = tmp_path / "idx" / "mnist"
    src.mkdir(parents=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(src / (stem + ".gz"), "wb") as fh:
            fh.write(stem.encode())
    out = tmp_path / "peer_data"
    bp.prepare_peer_data(out, tmp_path / "idx", ["clustergan"])
    raw = out / "mnist" / "MNIST" / "raw"
    assert (raw / "t10k-images-idx3-ubyte").read_bytes() == b"t10k-images-idx3-ubyte"
    assert (raw / "train-labels-idx1-ubyte").read_bytes() == b"t10k-labels-idx1-ubyte"  # train -> the 10k test


@pytest.mark.slow
@pytest.mark.parametrize("case", ["clustergan", "hc_ref"])
def test_genclust_side_times_iterations_on_digits(tmp_path, case):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_peers.py"), "--child", "genclust", "--case", case,
         "--warmup", "1", "--iters", "2", "--threads", "1", "--result", str(tmp_path / "r.json"),
         "--workdir", str(tmp_path), "--genclust-overrides", "dataset=digits",
         *(["method.nets.critic.conv_padding=same"] if case == "clustergan" else [])],  # 8x8: too small unpadded
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["iters_timed"] == 2 and r["flops_per_iter"] > 0 and r["threads"] == 1
    assert r["steps_per_iter"] == (5 if case == "clustergan" else 1)
    assert r["images_per_iter"] == ([320, 704] if case == "clustergan" else [200, 1000])


def test_clustergan_case_compares_the_ports_architecture():
    assert "method.nets.critic.conv_padding=valid" in bp.GENCLUST_OVERRIDES["clustergan"]
    merged = bp.merge_overrides(bp.GENCLUST_OVERRIDES["clustergan"], bp.PAPER_LAYOUT)
    assert "method.nets.critic.conv_padding=same" in merged and "method.nets.critic.conv_padding=valid" not in merged


def test_recorder_waits_for_the_device_before_each_reading():
    waits = []
    rec = bp.Recorder(warmup=0, iters=1, sync=lambda: waits.append(len(waits)))
    with pytest.raises(bp._Done):
        for _ in range(3):
            rec.boundary(0)
    assert len(waits) == 2  # one per boundary read (the second completes the timed iteration)
    assert bp.peak_device_memory("cpu") is None
    bp.device_sync("cpu")()  # a no-op on the CPU


def test_on_a_gpu_the_peer_runs_its_own_cuda_code(tmp_path):
    before = (torch.Tensor.cuda, torch.nn.Module.cuda, torch.cuda.set_device)
    apply = bp.peer_patches(tmp_path, "cuda")
    namespace = {"torch": torch}
    apply(namespace)
    assert (torch.Tensor.cuda, torch.nn.Module.cuda, torch.cuda.set_device) == before  # nothing of torch replaced
    assert namespace["torch"] is torch


def test_gpu_table_has_a_device_memory_column():
    run = {"s_per_iter_median": 0.01, "images_per_iter": [64, 128], "peak_rss_kib": 2 ** 20, "iters_timed": 5,
           "flops_per_iter": 1e9, "params": 1000, "torch": "x", "threads": 4, "peak_device_bytes": 3 * 2 ** 30}
    peaks = {"fp32": 50e12, "bf16": 700e12, "n": 8192, "device": "cuda", "gpu": "NVIDIA H100", "tf32": False,
             "cudnn_tf32": True}
    side = bp.summarize("clustergan", [run], peaks)
    assert side["peak_device_gib"] == pytest.approx(3.0)
    report = {"host": bp.host_info(), "peak_gflops": peaks, "torch": "x", "threads": 4, "repeats": 1,
              "command": "python scripts/bench_peers.py --device cuda", "cases": {"clustergan": {
                  "genclust": side, "peer": side, "genclust_overrides": [],
                  "ratios": {"genclust": bp.speed_ratios(side, side, [run], [run])}}}}
    md = bp.markdown(report)
    assert md.startswith("GPU NVIDIA H100 (fp32 matmuls TF32 off, cuDNN convolutions TF32 on") and "| peak GPU GiB |" in md
    row = next(line for line in md.splitlines() if line.startswith("| ClusterGAN") and "genclust |" in line)
    assert row.count("|") == md.splitlines()[3].count("|") and "| 3.00 |" in row
