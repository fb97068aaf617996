#!/usr/bin/env bash
# GPU figures (BENCHMARKS.md section 4): Lego at full size against instant-ngp's 5-minute
# figure, the CUDA kernel tests, the step profile on CUDA.
#
#   bash benchmarks/gpu.sh lego   LEGO_DIR OUT_DIR [SECONDS]   # train SECONDS (300) at 800x800
#   bash benchmarks/gpu.sh tests  OUT_DIR [SECONDS]            # arch tests on cuda, capped
#   bash benchmarks/gpu.sh profile LEGO_DIR OUT_DIR            # bench --profile on cuda
#
# Run from a folder where `python -m taichi_nerf.cli` imports the installed package (PYTHON
# picks the interpreter). The GPU settings are instant-ngp's: 2^18 samples a step, a 2^19
# hash table per level. They are `train`'s cuda defaults today, and stay pinned here so that
# the figures keep their meaning if those defaults change.
set -u
PY=${PYTHON:-python3}
ARCH=${ARCH:-cuda}  # another arch only to try the script out
GPU_SETTINGS=(target-samples=262144 max-rays=262144 log2-table=19)
GPU_FLAGS=()
for s in "${GPU_SETTINGS[@]}"; do GPU_FLAGS+=("--${s%%=*}" "${s#*=}"); done

case "${1:-}" in
lego)
    data=$2; out=$3; secs=${4:-300}
    mkdir -p "$out"
    # compile first (a few steps), so the timed run's budget is spent training, as
    # instant-ngp's compiled binary's is; the offline cache carries the kernels over
    $PY -m taichi_nerf.cli train "$data" --arch "$ARCH" --steps 4 "${GPU_FLAGS[@]}" \
        --out "$out/warmup" --quiet > "$out/warmup.log" 2>&1
    tail -2 "$out/warmup.log"
    $PY -m taichi_nerf.cli train "$data" --arch "$ARCH" --time "$secs" "${GPU_FLAGS[@]}" \
        --out "$out/run" --quiet 2>&1 | tee "$out/train.log"
    ;;
tests)
    out=$2; secs=${3:-150}
    mkdir -p "$out"
    TAICHI_NERF_TEST_ARCHS=$ARCH timeout "$secs" $PY -m pytest "$(dirname "$0")/../tests" -q \
        -k "$ARCH" -p no:cacheprovider 2>&1 | tee "$out/tests.log" | tail -15
    ;;
profile)
    data=$2; out=$3
    mkdir -p "$out"
    sets=()
    for s in "${GPU_SETTINGS[@]}"; do sets+=(--set "$s"); done
    $PY -m taichi_nerf.cli bench --profile "$data" --arch "$ARCH" --time 20 --steps 32 \
        "${sets[@]}" --json "$out/profile.json" 2>&1 | tee "$out/profile.log"
    ;;
*)
    echo "usage: bash benchmarks/gpu.sh lego|tests|profile ..." >&2
    exit 2
    ;;
esac
