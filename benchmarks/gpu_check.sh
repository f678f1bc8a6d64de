#!/usr/bin/env bash
# The prepared GPU check, one short run on a machine with a CUDA GPU (often lent for minutes only):
#   1. one training step of every trainer and every `make reproduce` row at the paper profile's sizes, in fp32
#      and bf16, against the GPU's matmul rate, and the full paper reproduction extrapolated (gpu_check.py);
#   2. rows per GPU: 1, 2 and 4 copies of setting 1's RAIN row at the paper profile's sizes at once, their
#      aggregate steps per second (rows_per_gpu.py; make reproduce's default two rows per GPU comes from here);
#   3. the `cuda` tests (tests/integration/test_cuda.py);
#   4. the smoke reproduction end to end on CUDA, four notebooks sharing the GPU.
# Each part has its own time limit and the next one runs whatever happened, so a slow part costs only itself.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]       (default build/gpu_check: the logs, gpu_steps.json, the smoke run's reproduce.json and table;
#                                                 the measured runs are kept in benchmarks/results/gpu_check_*)
#
# Packages: a project venv (`make venv`) is used if present; else the machine's python3 must hold torch, and
# wheels for the rest may be carried in .whl/ (pip download ... -d .whl papermill ipykernel nibabel ...).
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-build/gpu_check}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CMR_DEVICE=cuda
PY=python3
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
elif compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/cmr_site .whl/*.whl \
    || { echo "gpu_check: the wheels in .whl/ did not install"; exit 1; }
  export PYTHONPATH="/tmp/cmr_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  python3 -m ipykernel install --prefix /tmp/cmr_jupyter --name python3 >/dev/null 2>&1
  export JUPYTER_PATH=/tmp/cmr_jupyter/share/jupyter PATH="/tmp/cmr_site/bin:$PATH"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; $PY -c "import torch; print('torch', torch.__version__)"; } \
  >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

part() {   # part NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, report its status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "gpu_check: $name exit $rc after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
}

PARTS=${PARTS:-steps rows tests smoke}      # a subset reruns only those parts
has() { [[ " $PARTS " == *" $1 "* ]]; }
has steps && part steps "${STEPS_LIMIT:-200}" $PY benchmarks/gpu_check.py --reps "${REPS:-5}" --out "$OUT/gpu_steps.json"
has rows && part rows_per_gpu "${ROWS_LIMIT:-180}" $PY benchmarks/rows_per_gpu.py --steps "${ROW_STEPS:-20}" \
  --out "$OUT/rows_per_gpu.json"
has tests && part cuda_tests "${TESTS_LIMIT:-150}" $PY -m pytest -q -m cuda tests/integration/test_cuda.py -p no:cacheprovider
has smoke || exit 0
SMOKE=/tmp/cmr_gpu_smoke
rm -rf "$SMOKE" && mkdir -p "$SMOKE"
part smoke_reproduce "${SMOKE_LIMIT:-240}" $PY -m cmr_lib.pipeline.reproduce --profile smoke --jobs 4 --output-root "$SMOKE"
cp "$SMOKE/results/reproduce.json" "$OUT/smoke_reproduce.json" 2>/dev/null
cp "$SMOKE/results/table2.md" "$OUT/smoke_table2.md" 2>/dev/null
exit 0
