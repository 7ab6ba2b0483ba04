#!/usr/bin/env bash
# One unattended run of the GPU checks, in priority order, within a wall-clock budget.
#
#   bash bench/device_run.sh                      # on the GPU machine, from the repo root
#   SMOKE=1 OUT=/tmp/out bash bench/device_run.sh # tiny sizes, to check the script anywhere
#
# Expects: python3 with jax (+ CUDA plugin), flax, optax, numpy, scipy, torch, OpenCV, pytest
# and pytest-timeout; the wheels of what is missing there (jaxopt, Pillow) in .whl/ (ignored
# by git: carry it), fetched for CPython 3.12 on x86-64 Linux with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl jaxopt==0.8.5 pillow==13.0.0
# No network. Steps, in priority order (each under its own timeout, cut to what is left of
# BUDGET seconds, about nine minutes; a failing step does not stop the run):
#   0 environment
#   1 python -m bench, stage 1 at 512² and 1024² in float32 / tf32 / bfloat16, beside the
#     authors' PyTorch step with TF32 off and with PyTorch's defaults (TF32 convolutions)
#   2 bench/batch.py: the default configuration (precision auto) at its full budget, 512²
#     and 1024², stacks 1 and --batch-size auto, then 8 where time is left
#   3 bench/case1.py at tf32 and at bfloat16 (the quality figures behind precision auto)
#   4 bench/pipeline.py (manifest end to end against the device rate)   5 pytest
# Steps 3-5 run only in what is left of the budget.
# Output, refreshed after every step so that a kill still returns what was done:
#   $OUT/device_results.tgz  logs/<step>.log, results/<files bench/results got>, summary.txt
#   $OUT/summary.txt         exit status and seconds per step, and the benches' tables
# The results/ folder of the tarball is not bench/results: a CPU result of the same name
# (bench/poisson.py writes poisson-cpu-<date> on every platform) is not overwritten.
set -u
cd "$(dirname "$0")/.."

SMOKE=${SMOKE:-0}
BUDGET=${BUDGET:-$([ "$SMOKE" = 1 ] && echo 1800 || echo 540)}
SCALE=$([ "$SMOKE" = 1 ] && echo 5 || echo 1) # step timeouts x SCALE: a smoke run is on a CPU
OUT=${OUT:-/tmp/jaxblend_device_out}
START=$(date +%s)
RUN=$(mktemp -d /tmp/jaxblend_run.XXXXXX)
mkdir -p "$OUT" "$RUN/logs" "$RUN/results" bench/results
SUMMARY=$RUN/summary.txt
touch "$RUN/start.mark"
export PYTHONUNBUFFERED=1

say() { echo "$*" | tee -a "$SUMMARY"; }

# The wheels first: one pip call; if it fails (a wheel for another Python, as on a
# development machine), each wheel alone; without pip, pure-Python wheels unzipped.
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl >"$RUN/logs/wheels.log" 2>&1 || {
      for w in .whl/*.whl; do
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
          --target /tmp/site "$w" >>"$RUN/logs/wheels.log" 2>&1 || echo "skipped $w" >>"$RUN/logs/wheels.log"
      done
    }
  else
    for w in .whl/*-none-any.whl; do
      python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall("/tmp/site")' "$w" \
        >>"$RUN/logs/wheels.log" 2>&1
    done
  fi
fi
export PYTHONPATH=/tmp/site:$PWD

pack() {
  find bench/results -type f -newer "$RUN/start.mark" -exec cp -p {} "$RUN/results/" \;
  cp "$SUMMARY" "$OUT/summary.txt"
  tar czf "$OUT/device_results.tgz.part" -C "$RUN" logs results summary.txt &&
    mv -f "$OUT/device_results.tgz.part" "$OUT/device_results.tgz"
  if [ "$(stat -c %s "$OUT/device_results.tgz")" -gt 15000000 ]; then  # 16 MiB per file
    for f in "$RUN"/logs/*.log; do tail -c 2000000 "$f" >"$f.tail" && mv -f "$f.tail" "$f"; done
    tar czf "$OUT/device_results.tgz" -C "$RUN" logs results summary.txt
  fi
}

# step NAME SECONDS COMMAND...: run with a timeout of SECONDS (x SCALE) or what is left of
# the budget less RESERVE (the 10 s grace between SIGINT and SIGKILL, packing), log to
# logs/NAME.log, record status and time, pack. SIGINT first: Python then prints where it
# was (pytest its summary so far).
RESERVE=15
step() {
  local name=$1 cap=$2 left t0 rc secs note=""
  shift 2
  cap=$((cap * SCALE))
  left=$((BUDGET - ($(date +%s) - START) - RESERVE))
  [ "$cap" -gt "$left" ] && cap=$left
  if [ "$cap" -lt 15 ]; then
    say "$(printf '%-10s skipped: %ss of the budget left' "$name" "$left")"
    pack
    return
  fi
  touch "$RUN/$name.mark"
  echo "== $name (timeout ${cap}s): $*"
  echo "\$ $*" >"$RUN/logs/$name.log"
  t0=$SECONDS
  timeout -s INT -k 10 "$cap" "$@" >>"$RUN/logs/$name.log" 2>&1
  rc=$?
  secs=$((SECONDS - t0))
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then note=" (timed out)"; fi
  say "$(printf '%-10s exit %3s  %4ss of %4ss%s' "$name" "$rc" "$secs" "$cap" "$note")"
  # The benches' tables (every results .md this step wrote), the tests' verdicts.
  find bench/results -name '*.md' -newer "$RUN/$name.mark" | sort | while read -r md; do
    say "    $(basename "$md"):"
    grep -E '^(\||#|jax |Part |Case1 |Batched)' "$md" | sed 's/^/    /' | tee -a "$SUMMARY"
  done
  if [ "$name" = tests ]; then
    grep -E '^(FAILED|ERROR) |(passed|failed|error|skipped).* in [0-9.]+s' "$RUN/logs/$name.log" \
      | sed 's/^/    /' | tee -a "$SUMMARY"
  fi
  tail -n 3 "$RUN/logs/$name.log" | sed 's/^/    | /'
  pack
}

# The code measured: a hash of the Python sources, in a fixed (C locale) file order
# (the same command in a checkout tells whether it matches).
TREE=$(LC_ALL=C bash -c 'cat jaxblend/*.py bench/*.py tests/*.py' | sha256sum | cut -c1-12)
say "jaxblend device run $(date -u +%FT%TZ), SMOKE=$SMOKE, budget ${BUDGET}s," \
  "sources $TREE (\`LC_ALL=C bash -c 'cat jaxblend/*.py bench/*.py tests/*.py' | sha256sum\` in a" \
  "checkout gives the same for the same code; the .git copied there may lag the tree)"

# 0. Environment; a probe runs a JAX and a PyTorch convolution on the GPU in one process.
probe() {
  nvidia-smi
  nproc
  free -g | head -n 2
  python3 -m pip list 2>/dev/null |
    grep -iE "^(jax|flax|optax|numpy|scipy|torch|pillow|opencv|onnx|pytest|ml.dtypes|nvidia)"
  python3 - <<"EOF"
import importlib.metadata as md

for name in ("jax", "jaxlib", "flax", "optax", "jaxopt", "numpy", "pillow", "torch"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
import jax
import jax.numpy as jnp

print("devices", jax.devices())
print("JAX_BACKEND", jax.default_backend())
x, k = jnp.ones((1, 32, 32, 8)), jnp.ones((3, 3, 8, 8))
conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC")))
print("jax conv", float(conv(x, k).sum()))
import torch

cuda = torch.cuda.is_available()
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", cuda,
      "cudnn", torch.backends.cudnn.version())
if cuda:
    print("torch device", torch.cuda.get_device_name(0))
    t = torch.ones(1, 8, 32, 32, device="cuda")
    print("torch conv", float(torch.nn.functional.conv2d(t, torch.ones(8, 8, 3, 3).cuda()).sum()))
print("jax conv again", float(conv(x + 1, k).sum()))
import PIL
import jaxopt

import jaxblend

print("jaxblend from", jaxblend.__file__, "weights", jaxblend.load_vgg().path)
print("PROBE", jax.default_backend(), "torch-cuda" if cuda else "torch-cpu", "ok")
EOF
}
export -f probe
step env 40 bash -c probe
cat "$RUN/logs/wheels.log" >>"$RUN/logs/env.log" 2>/dev/null
PROBE=$(grep '^PROBE ' "$RUN/logs/env.log" | tail -n 1)
say "    probe: ${PROBE:-failed (see logs/env.log)}"
if [ "$SMOKE" != 1 ] && ! grep -q '^JAX_BACKEND gpu' "$RUN/logs/env.log"; then
  # JAX on the CPU of this machine would spend the whole budget on meaningless numbers.
  say "JAX does not run on the GPU here: stopping (see logs/env.log)."
  pack
  cat "$SUMMARY"
  exit 1
fi

if [ "$SMOKE" = 1 ]; then
  SIZES=(64)
  BENCH=(--bf16 --tf32 --stages 1 --memory-sizes --repeats 1)
  CASE1=(--steps 2 2)
  BATCH=(--canvas 64 --sizes 1 --batch-size auto --then-sizes 2 --budget small --max-stack 4)
  PIPELINE=(--jobs 8 --canvas 48 --steps 1 1 --stack 4)
  TESTS=(tests/test_vgg.py tests/test_bench_tools.py)
else
  SIZES=(512 1024)
  BENCH=(--bf16 --tf32 --stages 1 --memory-sizes --repeats 3)
  CASE1=()
  BATCH=(--canvas 512 1024 --sizes 1 --batch-size auto --then-sizes 8 --time-budget 250)
  PIPELINE=(--jobs 400 --canvas 256 --steps 10 10 --stack 16)
  # Device-dependent numerics first (a cut at the time limit leaves the host-side ones).
  TESTS=(tests/test_vgg.py tests/test_bench_tools.py tests/test_losses.py tests/test_optim.py
    tests/test_blend.py tests/test_batch.py tests/test_poisson.py)
  for f in tests/test_*.py; do [[ " ${TESTS[*]} " == *" $f "* ]] || TESTS+=("$f"); done
fi
# PyTorch shares step 1's process and the tests start JAX subprocesses: JAX must not take
# 75% of the GPU's memory up front there.
NOPREALLOC=(env XLA_PYTHON_CLIENT_PREALLOCATE=false)
if grep -q ' ok$' <<<"$PROBE"; then
  step bench 150 "${NOPREALLOC[@]}" python3 -m bench --sizes "${SIZES[@]}" "${BENCH[@]}"
else
  # JAX and PyTorch could not share a process: time the authors' step in one of its own.
  step bench 120 "${NOPREALLOC[@]}" python3 -m bench --no-torch --sizes "${SIZES[@]}" "${BENCH[@]}"
  step torch 40 python3 -m bench.torch_step --sizes "${SIZES[@]}" --repeats 5 --tf32 both
fi
step batch 300 python3 bench/batch.py "${BATCH[@]}"
step case1-tf32 60 python3 bench/case1.py "${CASE1[@]}" --set '{"precision": "tf32"}' --tag tf32
step case1-bf16 60 python3 bench/case1.py "${CASE1[@]}" --set '{"precision": "bfloat16"}' \
  --tag bfloat16
step pipeline 90 python3 bench/pipeline.py "${PIPELINE[@]}"
# Deselected: they need the network (a 60 MB wheel download) or setuptools and the runtime
# dependencies in the system's site-packages (a non-editable pip install); nothing in them
# depends on the device.
TIMEOUT=()
python3 -c 'import pytest_timeout' 2>/dev/null && TIMEOUT=(--timeout 60)
step tests 120 "${NOPREALLOC[@]}" python3 -m pytest -q -rfE -p no:cacheprovider "${TIMEOUT[@]}" \
  --durations=15 \
  --deselect tests/test_vgg.py::test_shipped_vgg16_matches_onnxruntime_on_photo \
  --deselect tests/test_vgg.py::test_shipped_file_rebuilds_bit_for_bit \
  --deselect tests/test_cli.py::test_non_editable_install_finds_shipped_weights_and_examples \
  "${TESTS[@]}"

say "total $(($(date +%s) - START))s"
pack
echo
cat "$SUMMARY"
