#!/usr/bin/env bash
# One device call for patches written but not yet measured (docs/patches/*.patch, made
# with `git diff` against the commit that holds this script): each patch's tree against
# this tree (base) on one machine, then scripts/gpu_check.sh over base plus the patches
# that won. Logs under $OUT, summary.txt first.
#   bash scripts/ab_patches.sh KERNEL_PATCHES [HOST_PATCHES]   (comma-separated; "-": none)
# A kernel patch wins with a mean of -0.15 us or less over the rows (AB_SHAPES, default
# the three B=1 shapes, in the three modes) and no row above +0.3 us
# (scripts/ab_graph.py: graph medians of 200, two rounds, the trees alternating, every
# result checked against the reference; AB_ENV, e.g. CUPYSEL_COOP_KEYS=1, is set for
# every A/B run). A host patch (Python only)
# wins when select()'s hot host time at pqcache-8k drops by 1 us or more in both rounds
# (scripts/host_time.py). The winners' tests then run in gpu_check (SKIP_GC=1: not;
# GC_LIMIT: seconds from the start by which gpu_check must end, default 560; GC_IF_NONE=0:
# none when no patch wins). AB_MODES (default all three), AB_T0 / AB_T1 / AB_T2: seconds
# for base's first run (references, compiles), each patch's first run, and round 2.
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 CUPYSEL_REF_DIR=/tmp/refs
S=$OUT/summary.txt W=/tmp/abp
. scripts/trees.sh  # el, log, mk NAME [PATCH...]: a copy of this tree with the patches applied
IFS=, read -ra KP <<< "${1:--}"
IFS=, read -ra HP <<< "${2:--}"
abs() { [ "$1" = - ] || realpath "$1"; }
mk base
KT=() HT=()
for i in "${!KP[@]}"; do p=$(abs "${KP[$i]}"); [ -n "$p" ] && mk k$i "$p" && KT+=("k$i:$p"); done
for i in "${!HP[@]}"; do p=$(abs "${HP[$i]}"); [ -n "$p" ] && mk h$i "$p" && HT+=("h$i:$p"); done

AB=$OUT/ab.txt
ab() { timeout $2 env ${AB_ENV:-} python3 scripts/ab_graph.py $W/$1 \
  ${AB_SHAPES:-pqcache-8k,llama-32k,llama-128k} ${AB_MODES:-softmax_sum,max,mean} 2>&1 |
  sed "s/^/$1 /" | tee -a "$AB"; }
if [ ${#KT[@]} -gt 0 ]; then
  ab base ${AB_T0:-120}; for t in "${KT[@]}"; do ab ${t%%:*} ${AB_T1:-70}; done; log "ab round 1"
  for t in "${KT[@]}"; do ab ${t%%:*} ${AB_T2:-45}; done; ab base ${AB_T2:-45}; log "ab round 2"
fi
HO=$OUT/host.txt
if [ ${#HT[@]} -gt 0 ]; then
  for r in 1 2; do for t in base "${HT[@]}"; do
    timeout 60 python3 scripts/host_time.py $W/${t%%:*} pqcache-8k 2>&1 | grep RESULT >> $HO
  done; done
  log host
fi
# The winners, in the order given.
WIN=$(python3 - "$AB" "$HO" "${KT[@]}" "${HT[@]}" <<'PY' 2>>"$S"
import json, os, re, sys
from collections import defaultdict
ab, ho, cands = sys.argv[1], sys.argv[2], sys.argv[3:]
t = defaultdict(list)
if os.path.exists(ab):
    for ln in open(ab):
        m = re.match(r"(\S+)\s+(\S+)\s+(\S+)\s+([\d.]+) us(.*)", ln)
        if m:
            t[m.group(1), m.group(2), m.group(3)].append(1e9 if "FAIL" in m.group(5) else float(m.group(4)))
host = defaultdict(list)
if os.path.exists(ho):
    for ln in open(ho):
        r = json.loads(ln.split("RESULT ", 1)[1])
        host[os.path.basename(r["tree"])].append(r)
rows = sorted({(s, md) for (_, s, md) in t})
win = []
for c in cands:
    name, path = c.split(":", 1)
    if name.startswith("k"):
        ds = [sum(t[name, s, md]) / len(t[name, s, md]) - sum(t["base", s, md]) / len(t["base", s, md])
              for s, md in rows if t.get((name, s, md)) and t.get(("base", s, md))]
        ok = bool(ds) and sum(ds) / len(ds) <= -0.15 and max(ds) <= 0.3
        print("%s %s: mean %+.2f max %+.2f rows %s -> %s" % (name, os.path.basename(path),
              sum(ds) / max(len(ds), 1), max(ds or [0]), " ".join("%+.2f" % d for d in ds),
              "win" if ok else "no"), file=sys.stderr)
    else:
        b, h = host.get("base", []), host.get(name, [])
        d = [y["select_s"] - x["select_s"] for x, y in zip(b, h)]
        ok = len(d) == 2 and max(d) <= -1.0
        for k in (b[0].keys() if b else []):
            if k not in ("tree", "shape"):
                print("host %s %s: base %s -> %s" % (name, k, [x[k] for x in b], [y[k] for y in h]),
                      file=sys.stderr)
        print("%s %s: select_s %s -> %s" % (name, os.path.basename(path), d, "win" if ok else "no"),
              file=sys.stderr)
    if ok:
        win.append(path)
print(" ".join(win))
PY
)
log "winners: ${WIN:-none}"
[ "${SKIP_GC:-0}" = 1 ] && { log "end (SKIP_GC=1: no gpu_check)"; exit 0; }
[ -z "$WIN" ] && [ "${GC_IF_NONE:-1}" = 0 ] && { log "end (no winner, GC_IF_NONE=0: no gpu_check)"; exit 0; }
mk final $WIN || exit 1
NAME="base$(for p in $WIN; do printf '+%s' "$(basename "$p" .patch)"; done)"
G=/tmp/gc
OUT=$G timeout $(( ${GC_LIMIT:-560} - $(el) )) env CUPYSEL_COMMIT="$NAME" \
  PYTEST_ARGS="$(python3 -c "import xdist" 2>/dev/null && echo "-n 14")" \
  bash $W/final/scripts/gpu_check.sh > $G.log 2>&1
echo "gpu_check $NAME rc=$?" | tee -a "$S"
cp $G/bench.txt $G/bench.png "$OUT/" 2>/dev/null
{ cat $G/env.txt; grep -E "passed|failed|FAILED|Error" $G/pytest.log | tail -12; } > "$OUT/gc.txt"
tail -3 "$OUT/gc.txt" | tee -a "$S"
log end
