#!/usr/bin/env bash
# Packs .device/ (ignored) for scripts/device_check.sh, the GPU checks of issue 18, run on a lent GPU machine
# through the workplace's device tool. That machine has torch, Lightning, pandas and scikit-learn but no Hydra
# and no network, and only the repository travels: so the kit holds Hydra's wheels, the IDX files (MNIST test,
# Fashion-MNIST) and the two peer checkouts, under the 64 MiB the tool carries with the working tree.
#   bash scripts/device_kit.sh <dmdmello/HC-MGAN checkout> <zhampel/clusterGAN checkout>
# Then, on the device: command "bash scripts/device_check.sh", carry [".device"] (see that script).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 2 ]; then
  echo "usage: bash scripts/device_kit.sh <HC-MGAN checkout> <clusterGAN checkout> (get them: python scripts/bench_peers.py)" >&2
  exit 2
fi
hcmgan=$1 clustergan=$2
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DATA=${GENCLUST_DATA_DIR:-../shared/datasets}
kit=.device
for d in "$DATA/mnist" "$DATA/fashion-mnist"; do
  [ -d "$d" ] || { echo "device_kit: $d not found (set GENCLUST_DATA_DIR to the folder with mnist/ and fashion-mnist/)" >&2; exit 2; }
done
[ -f "$hcmgan/tree/raw_split.py" ] || { echo "device_kit: $hcmgan is not a checkout of dmdmello/HC-MGAN" >&2; exit 2; }
[ -f "$clustergan/clusgan/models.py" ] || { echo "device_kit: $clustergan is not a checkout of zhampel/clusterGAN" >&2; exit 2; }

rm -rf "$kit"
mkdir -p "$kit/wheels" "$kit/data" "$kit/peers/hcmgan" "$kit/peers/clustergan"
# Hydra at the versions this checkout runs (pure Python); antlr4 4.9.3 is published only as an sdist, built here
# into a py3-none-any wheel
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$kit/wheels" \
  "hydra-core==$(version hydra-core)" "omegaconf==$(version omegaconf)"
"$PY" -m pip wheel -q --no-deps -w "$kit/wheels" "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
cp -r "$DATA/mnist" "$DATA/fashion-mnist" "$kit/data/"
chmod -R u+w "$kit/data"
# the peers without their git history; never part of the project (only the device run reads them)
tar -C "$hcmgan" --exclude=.git -cf - . | tar -C "$kit/peers/hcmgan" -xf -
tar -C "$clustergan" --exclude=.git -cf - . | tar -C "$kit/peers/clustergan" -xf -
kib=$(du -sk "$kit" | cut -f1)
echo "device_kit: $kit is $((kib / 1024)) MiB (with the working tree it must stay under the tool's 64 MiB)"
if [ "$kib" -gt $((56 * 1024)) ]; then
  echo "device_kit: $kit is too large to travel" >&2
  exit 1
fi
