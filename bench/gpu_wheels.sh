#!/usr/bin/env bash
# Download the wheels the GPU machine lacks (issue 12) into .whl/ (git-ignored), pinned.
#
# The GPU machine runs Python 3.12 with torch 2.11 / torchvision / torchaudio / timm /
# transformers / sentence-transformers / h5py / numba / pandas / matplotlib / click / fsspec /
# pyyaml / toolz / msgpack / psutil / jinja2 preinstalled and has no network; everything else
# `bench/gpu.sh` imports travels with the working tree (64 MiB in all, tree included).
# hsemotion is not carried: affect builds timm's EfficientNet-B0 itself (specs/encoders.md).
# torchcodec is not carried either: its PyPI wheel is CPU-only and needs the system FFmpeg
# libraries, so the script reports NVDEC as not measured there.
#
#   bench/gpu_wheels.sh            # then: device run with carry [".whl"] and bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${DEST:-.whl}
PIP=${PIP:-.venv/bin/pip}
WHEELS=(
  av==18.1.0                      # PyAV with its own FFmpeg (the largest by far)
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
  zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
  dask==2026.8.0 distributed==2026.8.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2
  tornado==6.6.1 zict==3.0.0 importlib_metadata==10.2.0 lazy-importer==0.1.0
  dasheng==0.0.9 pytorch-ignite==0.5.5
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  PLATFORMS+=(--platform "$p")
done
mkdir -p "$DEST"
for wheel in "${WHEELS[@]}"; do
  "$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "$wheel"
done
# One version of each: a stale second wheel would stop the install on the GPU machine.
ls "$DEST"/*.whl | sed -E 's#.*/([^-]+)-.*#\1#' | sort | uniq -d | while read -r dup; do
  echo "error: $DEST holds two versions of $dup; remove the old one" >&2; exit 1
done
bytes=$(cat "$DEST"/*.whl | wc -c)
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $((bytes / 1024 / 1024)) MiB ($bytes bytes) in $DEST"
if [ "$bytes" -ge $((64 * 1024 * 1024)) ]; then
  echo "error: over the 64 MiB a device run may carry" >&2; exit 1
fi
