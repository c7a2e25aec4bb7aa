#!/usr/bin/env bash
# Issue 18's GPU checks in one call, on a GPU machine lent through the workplace's device tool, from the kit that
# scripts/device_kit.sh packs here:
#   run(command="bash scripts/device_check.sh", carry=[".device"], timeout_s=570)
# 1. scripts/bench_peers.py --device cuda: genclust vs the authors' code at the papers' settings, side by side;
# 2. every method trains a few steps on CUDA (digits, trainer=smoke; float32 and bf16) and clusters new data.
# Results under $OUT (device_check.log, bench_peers_cuda.md/.json), or outputs/device_check elsewhere.
# The smoke runs print their ACC on 8x8 digits after 3 batches: a check that the path runs, not a result.
# Without a GPU (DEVICE=cpu) the same steps run on the CPU, with tiny bench settings: how the script is tested.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/device_check}
DEVICE=${DEVICE:-cuda}
REPEATS=${REPEATS:-3}
mkdir -p "$OUT"
log="$OUT/device_check.log"
say() { echo "device_check: $*" | tee -a "$log"; }
[ -d .device/wheels ] || { say "no .device/ kit: run scripts/device_kit.sh first and carry .device"; exit 2; }
PY=${PYTHON:-python3}
site=$(mktemp -d)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .device/wheels/*.whl \
  || { say "installing the kit's wheels failed"; exit 1; }
export PYTHONPATH="$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" GENCLUST_DATA_DIR="$PWD/.device/data" WANDB_MODE=disabled \
  MPLBACKEND=Agg PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
  accel=(trainer.accelerator=gpu trainer.devices=1)
else
  accel=(trainer.accelerator=cpu)
fi
"$PY" -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__, \
'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$log"

failed=0
smoke() {  # name, overrides...: a few training steps, then the run's own evaluation (new data through the contract)
  local name=$1; shift
  local start=$SECONDS
  timeout 240 "$PY" train.py dataset=digits trainer=smoke logger=none "${accel[@]}" \
    "hydra.run.dir=$OUT/runs/$name" "$@" >"$OUT/runs_$name.txt" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then
    say "smoke $name: ok in $((SECONDS - start)) s; $(grep -oE 'ACC [0-9.]+' "$OUT/runs_$name.txt" | head -n 1)"
  else
    failed=$((failed + 1))
    say "smoke $name: FAILED (exit $rc); last lines:"
    tail -n 15 "$OUT/runs_$name.txt" | tee -a "$log"
  fi
}
# first genclust vs the peers (each side in its own processes, alternating), so that its numbers come back even if a
# smoke run below eats the call's time; short settings when testing on a CPU
bench=(--device "$DEVICE" --repeats "$REPEATS" --threads "${THREADS:-4}" --data-dir "$GENCLUST_DATA_DIR"
       --peer-dir .device/peers/hcmgan --peer-dir .device/peers/clustergan --peer-data "$(mktemp -d)"
       --peer-pythonpath "${PEER_PYTHONPATH:-}" --out "$OUT/bench_peers_$DEVICE")
[ "$DEVICE" = cuda ] || bench+=(--warmup 1 --iters 1 --peak-seconds 0.2 --peak-n 256 --case clustergan)
timeout "${BENCH_TIMEOUT:-420}" "$PY" scripts/bench_peers.py "${bench[@]}" >"$OUT/bench_peers.txt" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
  say "bench_peers: ok"
  cat "$OUT/bench_peers_$DEVICE.md" >>"$log"
else
  failed=$((failed + 1))
  say "bench_peers: FAILED (exit $rc); last lines:"
  tail -n 30 "$OUT/bench_peers.txt" | tee -a "$log"
fi
mkdir -p "$OUT/runs"
smoke clustergan method=clustergan method.nets.critic.conv_padding=same
smoke clustergan_bf16 method=clustergan method.nets.critic.conv_padding=same method.autocast=bf16
smoke udc method=udc
smoke udc_bf16 method=udc method.autocast=bf16
smoke hc_mgan_bf16 method=hc_mgan method.n_clusters=3 method.refinement.count=1 method.raw_split.epochs=2 \
  method.refinement.epochs=2 trainer.precision=bf16-mixed
# UMAP and HDBSCAN are not on the GPU machine: HRWAE-GAN with its GMM read-out only (Table 2's rows)
smoke hrwae_gan method=hrwae_gan method.clustering=gmm_z0 '~method.readouts.hdbscan' '~method.readouts.umap_gmm'
smoke cgm method=cgm method.langevin.steps=2

say "$failed step(s) failed"
[ "$failed" -eq 0 ]
