#!/usr/bin/env bash
# ncu summary of every cupysel kernel of two calls per shape (real clocks).
#   scripts/ncu.sh SHAPES [MODE] [extra ncu args]
set -uo pipefail
OUT=${OUT:-/tmp}
shapes=${1:-llama-128k,batch16-128k}
mode=${2:-softmax_sum}
shift 2 2>/dev/null || true
python3 -m pip install --no-build-isolation --no-deps -q -e . >/dev/null 2>&1
ncu --clock-control none --target-processes all -k regex:cs_ \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats \
  --metrics l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,smsp__sass_inst_executed_op_shared_ld.sum,sm__inst_executed.sum,smsp__inst_executed_op_shared_atom.sum "$@" \
  --csv --page details python3 scripts/prof_run.py "$shapes" "$mode" > "$OUT/ncu_${mode}.csv" 2>"$OUT/ncu.err"
python3 scripts/ncu_summary.py "$OUT/ncu_${mode}.csv"
