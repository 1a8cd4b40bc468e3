#!/usr/bin/env bash
# Learn-to-Steer GPU check: one command for a lent GPU, <= 8 minutes on an H100.
#
# Builds full-size random-weight models inside ComfyUI (no checkpoints, no network) and prints, per model, the peak
# memory and time of plain sampling (a no-grad forward) and of one steering iteration with recomputation off
# (memory "fast") and on (memory "low"), then one summary table:
#   sd21_512_fp16         SD2.1-base, fp16, 512 px
#   sdxl_1024_fp16        SDXL, fp16, 1024 px
#   flux_1024_bf16        FLUX.1-dev, bf16, 1024 px
#   flux_1024_fp8         FLUX.1-dev, fp8_e4m3fn weights (cast to bf16 at run time, as UNETLoader's weight_dtype)
#   flux_1024_fp8_lowvram FLUX.1-dev fp8 under ComfyUI's --lowvram, as on a 12 GiB card (weights partially loaded,
#                         the rest streamed; see benchmarks/steering_bench/loading.py)
#   flux_512_bf16         FLUX.1-dev, bf16, 512 px: a FLUX time ratio low/fast even if fast runs out of memory at
#                         1024 px (last: the first to go when the budget runs short)
# Each model runs in its own process with its own timeout, and the whole check keeps to a time budget (--budget), so
# one failure or hang costs only its own row.
#
# Expected setup on the GPU machine (it has no network: nothing can be installed there):
#   * a Python with a CUDA build of torch and ComfyUI's requirements (the benchmark imports torch, torchsde,
#     einops, safetensors, transformers, scipy, psutil, pyyaml, pillow, tqdm). PYTHON names it (default python3).
#     Checked first; what is missing is named and the check stops. Pure-Python packages it lacks (e.g. torchsde and
#     trampoline) can travel as wheels: a folder of .whl files named by GPU_CHECK_WHEELS (default
#     <repo>/.gpu_check/wheels when it exists) is installed with pip --no-index into a temporary folder first.
#   * a ComfyUI checkout (>= 0.3.60; no models needed) copied onto the machine, named by COMFYUI_PATH (default
#     <repo>/.gpu_check/ComfyUI when it exists). <repo>/.gpu_check/ is git-ignored for exactly this: copy ComfyUI
#     (without its .git) and the wheels there, and send that folder along with the working tree.
#   * this repository's working tree (the script finds it from its own location).
#
# Usage:
#   benchmarks/gpu_check.sh                   # GPU, full size (COMFYUI_PATH, PYTHON as above)
#   benchmarks/gpu_check.sh --tiny            # CPU smoke test: the same runs, tiny models at 128 px (about 4 min
#                                             # on 2 idle cores; the FLUX classifier's 1368 channels dominate)
#   options: --device cpu|cuda, --out DIR (default $OUT when set, else a new temporary folder),
#            --budget SECONDS (default 470 on a GPU, 1200 with --tiny), --only LABEL[,LABEL...]
# Output: the runs' tables as they finish, then the summary table; in the output folder gpu_check_summary.txt,
# gpu_check_reports.json (every run's figures) and gpu_check_logs.txt (every run's full log). Exit status 0 when
# every run finished, 1 when one failed, timed out or was skipped for lack of time (its row says which).

set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TINY=0
DEVICE=""
OUT_DIR="${OUT:-}"
BUDGET=""
ONLY=""

usage() { sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) TINY=1 ;;
        --device) DEVICE="$2"; shift ;;
        --out) OUT_DIR="$2"; shift ;;
        --budget) BUDGET="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$TINY" = 1 ]; then
    DEVICE="${DEVICE:-cpu}"; BUDGET="${BUDGET:-1200}"
    SIZE_ARGS=(--size tiny --text-tokens 32 --repeats 1 --warmup 0 --memory-processes none)
    export MALLOC_MMAP_THRESHOLD_=65536  # CPU memory measured in the run's own process: freed memory leaves the RSS
    RUN_TIMEOUT=300
else
    DEVICE="${DEVICE:-cuda}"; BUDGET="${BUDGET:-470}"
    SIZE_ARGS=(--size full --repeats 2 --warmup 1)
    RUN_TIMEOUT=""
fi

if [ -z "${COMFYUI_PATH:-}" ] && [ -d "$REPO/.gpu_check/ComfyUI/comfy" ]; then
    export COMFYUI_PATH="$REPO/.gpu_check/ComfyUI"
fi
if [ -z "$OUT_DIR" ]; then
    OUT_DIR="$(mktemp -d "${TMPDIR:-/tmp}/l2s_gpu_check.XXXXXX")"
fi
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/l2s_gpu_check_work.XXXXXX")"
START=$SECONDS

WHEELS="${GPU_CHECK_WHEELS:-$REPO/.gpu_check/wheels}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "gpu_check: installing the wheels in $WHEELS (no index) into $WORK/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/*.whl \
        || { echo "gpu_check: SETUP MISSING: the wheels in $WHEELS do not install" >&2; exit 1; }
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi

export PYTHONUNBUFFERED=1
BENCH=("$PYTHON" "$REPO/benchmarks/steering_cost.py")
echo "gpu_check: device $DEVICE, $([ "$TINY" = 1 ] && echo tiny || echo full-size) models, budget ${BUDGET}s," \
     "output in $OUT_DIR"
if ! "${BENCH[@]}" --check-setup --device "$DEVICE" 2>"$WORK/setup.err"; then
    grep -v "torchaudio missing" "$WORK/setup.err" | tail -n 20 >&2
    echo "gpu_check: the setup check failed (see above); nothing was measured." >&2
    exit 1
fi

# label | timeout on a GPU (s) | benchmark arguments
RUNS=(
    "sd21_512_fp16|75|--model sd21 --resolution 512 --dtype fp16"
    "sdxl_1024_fp16|80|--model sdxl --resolution 1024 --dtype fp16"
    "flux_1024_bf16|105|--model flux_dev --resolution 1024 --dtype bf16"
    "flux_1024_fp8|105|--model flux_dev --resolution 1024 --dtype fp8_e4m3fn"
    "flux_1024_fp8_lowvram|105|--model flux_dev --resolution 1024 --dtype fp8_e4m3fn --vram lowvram --card-gib 12"
    "flux_512_bf16|70|--model flux_dev --resolution 512 --dtype bf16"
)

SEEN=""
FAILED=0
STATUS="$WORK/status.tsv"
: >"$STATUS"
summarize() {
    PYTHONPATH="$REPO/benchmarks${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m steering_bench.summary "$STATUS" \
        --text "$OUT_DIR/gpu_check_summary.txt" --json "$OUT_DIR/gpu_check_reports.json" "$@"
}

for entry in "${RUNS[@]}"; do
    IFS='|' read -r label gpu_timeout run_args <<<"$entry"
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$label,"* ]]; then
        continue
    fi
    if [ "$TINY" = 1 ]; then
        # tiny models at 128 px; no card size (on a CPU the benchmark loads half the weights itself)
        run_args="$(sed -e 's/--resolution [0-9]*/--resolution 128/' -e 's/--card-gib [0-9.]*//' <<<"$run_args")"
        if [[ "$SEEN" == *"|$run_args|"* ]]; then
            continue  # the same tiny run as an earlier one (they differ only in resolution at full size)
        fi
        SEEN="$SEEN|$run_args|"
    fi
    read -r -a args <<<"$run_args"
    timeout_s="${RUN_TIMEOUT:-$gpu_timeout}"
    left=$(( BUDGET - (SECONDS - START) - 15 ))  # 10 s for timeout's kill, 5 s for the summary
    if [ "$left" -lt 20 ]; then
        echo "gpu_check: $label skipped: the time budget is spent"
        printf '%s\t%s\t%s\t%s\n' "$label" -1 0 "$WORK/$label.json" >>"$STATUS"  # -1: skipped
        FAILED=1
        continue
    fi
    [ "$timeout_s" -gt "$left" ] && timeout_s=$left
    echo
    echo "=== $label (timeout ${timeout_s}s): ${args[*]}"
    run_start=$SECONDS
    timeout --kill-after=10 "$timeout_s" "${BENCH[@]}" "${args[@]}" "${SIZE_ARGS[@]}" --device "$DEVICE" \
        --memory fast,low --lean --json "$WORK/$label.json" >"$WORK/$label.log" 2>&1
    status=$?
    printf '%s\t%s\t%s\t%s\n' "$label" "$status" "$((SECONDS - run_start))" "$WORK/$label.json" >>"$STATUS"
    grep -v -e "torchaudio missing" "$WORK/$label.log" | tail -n 30
    if [ "$status" -ne 0 ]; then
        FAILED=1
        echo "gpu_check: $label exited with status $status$([ "$status" -eq 124 ] && echo ' (timeout)')"
    fi
    { echo "===== $label (exit $status)"; cat "$WORK/$label.log"; } >>"$OUT_DIR/gpu_check_logs.txt"
    summarize --quiet
done

echo
summarize
echo "gpu_check: done in $((SECONDS - START))s; files in $OUT_DIR"
exit "$FAILED"
