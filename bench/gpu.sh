#!/usr/bin/env bash
# The GPU checks of issue 12 in one shot, with the GPU machine's own python (no network there).
#
# Installs the wheels `bench/gpu_wheels.sh` put in .whl/ (when present) into a private folder,
# then runs bench/gpu.py: encoders model-only vs end-to-end, decode scaling, heads' steps/s,
# live heads' frames/s and latency.
# Arguments go to bench/gpu.py (default --device cuda; --out FILE also writes the table).
#
#   bench/gpu.sh --out "$OUT/gpu.md"                 # on the GPU machine (carry .whl)
#   bench/gpu.sh --device cpu --tiny                 # here, in about a minute on a quiet CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
if compgen -G ".whl/*.whl" >/dev/null && ! "$PY" -c "import av, zarr, open_clip" 2>/dev/null; then
  SITE=${AFFECT_SITE:-/tmp/affect-site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" bench/gpu.py "$@"
