#!/usr/bin/env bash
# One-GPU check, run from the repository root after `pip install -r requirements-cuda12.txt`
# (and requirements-test.txt for pytest/torch); < 4 minutes on an A100/H100-class GPU:
#
#   bash benchmarks/gpu_check.sh          # on the GPU
#   bash benchmarks/gpu_check.sh --cpu    # the same sections at tiny sizes on the CPU (< 1 min; CI)
#
# --cpu: JAX_PLATFORMS=cpu, width 4, 16 px, batch 4, one timed step; K=2 alone; 1 worker on 200 fake images.
# Sections (each headed `=== name ===`; a failing one is reported and the others still run; the
# exit status is the number of failed sections):
#   device      nvidia-smi, jax.devices() and device_kind, jax/jaxlib versions
#   tests       tests on the GPU: test_one_core.py (xla backend = stock XLA; population step =
#               per-model steps), test_step_equivalence.py (train step vs torch), test_bf16.py
#               (--cpu: only collected; the CPU suite runs them)
#   train       img/s + MFU (XLA cost-analysis FLOPs / step time / the device's peak, bench.py
#               PEAK_TFLOPS): ResNet-50 224px bf16 and CIFAR ResNet-18 32px bf16 (--cpu: the latter)
#   population  cost per model of K=8 vmapped models vs K=1 (ResNet-18 CIFAR bf16)
#   data        input pipeline img/s with N grain workers (benchmarks/data_bench.py), next to
#               the train rate: the GPU is only as fast as the pipeline feeding it
set -u -o pipefail
cd "$(dirname "$0")/.."

CPU=0
[[ "${1:-}" == "--cpu" ]] && CPU=1
ONE_CORE=tests/test_one_core.py
TESTS=("$ONE_CORE::test_xla_backend_train_step_is_stock_flax" "$ONE_CORE::test_population_under_xla_has_one_conv_per_layer"
       "$ONE_CORE::test_population_step_equals_each_models_own_step" tests/test_step_equivalence.py tests/test_bf16.py)
PY="${PYTHON:-python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# Persistent compilation cache: bench.py compiles each step twice (timed backend + the FLOP
# reference on the xla backend); on a GPU both are the same program, so the second is a cache hit.
export JAX_COMPILATION_CACHE_DIR="$TMP/jax_cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0

if (( CPU )); then
  export JAX_PLATFORMS=cpu
  # The tests' value here is running them on the GPU; on the CPU the suite runs them anyway, so
  # the dry run only collects them (a renamed or broken test file still fails it).
  PYTEST=(--collect-only)
  R50=()  # ResNet-50 only on the GPU (its CPU compile alone is ~50 s).
  # --backend=xla: the timed step and the FLOP reference are one program (a compilation-cache hit).
  R18=(--model=resnet18 --stem=cifar --image=16 --batch=4 --width=4 --backend=xla)
  STEPS=(--warmup=1 --steps=1)
  POP=(--model=resnet18 --stem=cifar --image=16 --batch=4 --width=4 --population=2 --warmup=1 --steps=1
       --backend=xla)
  DATA=(--num_workers=1 --batch_size=16 --num_batches=4 --fake_per_batch=40 --cases=cifar10_32)
else
  PYTEST=()
  R50=(--model=resnet50 --stem=imagenet --image=224 --batch=128)
  R18=(--model=resnet18 --stem=cifar --image=32 --batch=512)
  STEPS=(--warmup=3 --steps=10 --rewarm=0)
  POP=(--model=resnet18 --stem=cifar --image=32 --batch=128 --population=1,8 --warmup=2 --steps=5 --rewarm=0)
  WORKERS="$(nproc)"; (( WORKERS > 8 )) && WORKERS=8
  DATA=(--num_workers="$WORKERS" --batch_size=256 --num_batches=40 --cases=cifar10_32)
fi

FAILED=()
START=$SECONDS
section() {  # section NAME COMMAND...: runs it, output to the console and $TMP/NAME.log
  local name="$1"; shift
  echo "=== $name ==="
  local t0=$SECONDS
  if ! "$@" 2>&1 | grep -v -e "^WARNING: All log messages before absl" | tee "$TMP/$name.log"; then
    FAILED+=("$name")
    echo "--- $name FAILED"
  fi
  echo "--- $name: $((SECONDS - t0)) s"
}

device_summary() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  "$PY" -c 'import jax, jaxlib; d = jax.devices(); print("jax", jax.__version__, "jaxlib", jaxlib.__version__,
"backend", jax.default_backend()); print("devices:", d); print("device_kind:", d[0].device_kind)'
  if (( ! CPU )); then
    "$PY" -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else
"error: JAX sees no GPU (pip install -r requirements-cuda12.txt; --cpu for the CPU dry run)")'
  fi
}

train_rates() {
  if (( ${#R50[@]} )); then
    "$PY" -m benchmarks.bench "${R50[@]}" --dtype=bfloat16 --mode=train --mfu "${STEPS[@]}" || return 1
  fi
  "$PY" -m benchmarks.bench "${R18[@]}" --dtype=bfloat16 --mode=train --mfu "${STEPS[@]}"
}

data_vs_train() {
  "$PY" -m benchmarks.data_bench --workdir="$TMP/data" "${DATA[@]}" > "$TMP/data_bench.out" 2>&1
  local rc=$?
  cat "$TMP/data_bench.out"
  (( rc == 0 )) || return "$rc"
  local train data
  train="$(grep '^jax_train' "$TMP/train.log" | tail -1 | awk '{print $2}')"  # The CIFAR ResNet-18 run.
  data="$(grep -m1 '^cifar10_32:' "$TMP/data_bench.out" | awk '{print $2}')"
  echo "CIFAR ResNet-18 bf16 train: ${train:-n/a} img/s; input pipeline (${DATA[0]}): ${data:-see above} img/s"
}

section device device_summary
section tests "$PY" -m pytest -q -p no:cacheprovider "${PYTEST[@]}" "${TESTS[@]}"
section train train_rates
section population "$PY" -m benchmarks.bench "${POP[@]}" --dtype=bfloat16 --mfu
section data data_vs_train
echo "=== summary ==="
echo "total $((SECONDS - START)) s; failed sections: ${FAILED[*]:-none}"
exit "${#FAILED[@]}"
