#!/usr/bin/env bash
# compute-sanitizer memcheck, racecheck, synccheck and initcheck over a GPU test subset
# that runs every kernel (cooperative and staged paths, radix and bitonic finish, every
# group_reduce, head tiles, special values, codes >= C and bad seq_lens). Logs under $OUT.
# CuPy's memory pool is switched off (CUPYSEL_NO_POOL=1) so that every array is its own
# allocation and an out-of-bounds access cannot hide inside a pooled block.
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
python3 -m pip install --no-build-isolation --no-deps -q -e . >/dev/null 2>&1
export CUPYSEL_NO_POOL=1 PYTHONUNBUFFERED=1
TESTS=(
  "tests/test_gpu_select.py::test_random_case[0]"
  "tests/test_gpu_select.py::test_random_case[1]"
  "tests/test_gpu_select.py::test_random_case[2]"
  "tests/test_gpu_select.py::test_random_case[16]"
  "tests/test_gpu_select.py::test_random_case_staged[0]"
  "tests/test_gpu_select.py::test_random_case_staged[2]"
  "tests/test_gpu_select.py::test_random_case_staged[4]"
  "tests/test_gpu_select.py::test_random_case_staged_bitonic[7]"
  "tests/test_gpu_select.py::test_many_ties_take_the_radix_path"
  "tests/test_gpu_select.py::test_weights_blocks_of_several_rounds[2]"
  "tests/test_gpu_edges.py::test_bad_contents_are_safe_and_check_raises"
  "tests/test_gpu_edges.py::test_edge_shapes[max-G7-auto]"
  "tests/test_gpu_edges.py::test_edge_shapes[mean-qwen-staged]"
  "tests/test_gpu_edges.py::test_special_values[nan_q-softmax_sum-auto]"
  "tests/test_gpu_edges.py::test_special_values[inf_q-max-staged]"
)
rc=0
for tool in ${TOOLS:-memcheck racecheck synccheck initcheck}; do
  extra=""
  [ "$tool" = memcheck ] && extra="--leak-check no"
  timeout ${TOOL_TIMEOUT:-400} compute-sanitizer --tool "$tool" $extra --target-processes all \
    --print-limit 20 python3 -m pytest -q -p no:xdist -p no:cacheprovider "${TESTS[@]}" \
    > "$OUT/sanitize_$tool.log" 2>&1
  trc=$?
  summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|failed" "$OUT/sanitize_$tool.log" | tail -3 | tr '\n' ' ')
  echo "$tool: exit $trc; $summary"
  [ $trc -ne 0 ] && rc=1
done
exit $rc
