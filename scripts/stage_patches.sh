#!/usr/bin/env bash
# One device call for diagnostic patches (docs/patches/diag-*.patch), whose results are
# wrong on purpose: the stage times (scripts/stage_ab.py) of this tree (base) and of this
# tree with each patch, two rounds, the trees alternating, on one machine. Log:
# $OUT/stages.txt.
#   bash scripts/stage_patches.sh PATCH[,PATCH]
# SA_BASE (comma-separated): patches applied to every tree, base included (e.g. v55's
# before it lands); SA_SHAPES (default batch16-32k,batch16-128k), SA_MODES (default
# max,softmax_sum); SA_T / SA_T2: seconds a tree's run may take in round 1 (compiles;
# default 120) and round 2 (default 60).
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
S=$OUT/stages.txt W=/tmp/sap
. scripts/trees.sh  # el, log, mk NAME [PATCH...]: a copy of this tree with the patches applied
BA=()
IFS=, read -ra BP <<< "${SA_BASE:-}"
for p in "${BP[@]}"; do BA+=("$(realpath "$p")"); done
mk base "${BA[@]}" || exit 1
T=(base)
IFS=, read -ra PP <<< "${1:?patches}"
for i in "${!PP[@]}"; do
  mk d$i "${BA[@]}" "$(realpath "${PP[$i]}")" && T+=(d$i) && log "d$i = base + ${PP[$i]}"
done
for r in 1 2; do
  limit=$([ $r = 1 ] && echo "${SA_T:-120}" || echo "${SA_T2:-60}")
  for t in "${T[@]}"; do
    timeout "$limit" python3 scripts/stage_ab.py $W/$t ${SA_SHAPES:-batch16-32k,batch16-128k} \
      ${SA_MODES:-max,softmax_sum} 2>&1 | tail -n 12 | tee -a "$S"
  done
  log "round $r"
done
