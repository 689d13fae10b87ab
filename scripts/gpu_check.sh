#!/usr/bin/env bash
# The GPU check CI cannot do: install cupysel on the device machine, run the whole test
# suite (GPU tests included) and `cupysel bench`, logs under $OUT.
#   PYTEST_ARGS  extra pytest arguments (default: -n 8 when pytest-xdist is there)
#   BENCH_ARGS   arguments for cupysel bench (default: --mode all --repeat 100)
#   SKIP_TESTS=1 / SKIP_BENCH=1 to leave a part out
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
{
  # A device copy of the tree may carry no .git, or a stale one: pass CUPYSEL_COMMIT (the
  # bench header reads it too).
  echo "commit: ${CUPYSEL_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import cupy, sys; print('python', sys.version.split()[0], 'cupy', cupy.__version__)"
} 2>&1 | tee "$OUT/env.txt"

python3 -m pip install --no-build-isolation --no-deps -q -e . 2>&1 | tail -3 | tee "$OUT/install.log"

rc=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  xdist=""
  python3 -c "import xdist" 2>/dev/null && xdist="-n 8"
  python3 -m pytest -q -rs ${PYTEST_ARGS:-$xdist} tests 2>&1 | tee "$OUT/pytest.log"
  rc=${PIPESTATUS[0]}
  tail -1 "$OUT/pytest.log"
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  cupysel bench ${BENCH_ARGS:---mode all --repeat 100} --output "$OUT/bench.txt" \
    --plot "$OUT/bench.png" 2>"$OUT/bench.err"
  brc=$?
  [ $brc -ne 0 ] && { tail -5 "$OUT/bench.err"; rc=$brc; }
fi
exit $rc
