# Sourced by the device scripts that compare trees, from the tree's root, with S (the log
# file) and W (where the trees go) set: the clock (el: seconds since sourcing), log (a
# timestamped line to the terminal and $S), a clean $W with the GPU named in $S, and
# mk NAME [PATCH...], which makes $W/NAME, a copy of this tree with the patches applied.
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
log() { echo "[$(el)s] $*" | tee -a "$S"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
rm -rf "$W" && mkdir -p "$W"
mk() {
  local d=$W/$1 p
  shift
  mkdir -p "$d"
  tar -c --exclude=.git --exclude=.carry --exclude=build --exclude='*.egg-info' \
    --exclude=__pycache__ . | tar -x -C "$d"
  for p in "$@"; do
    (cd "$d" && patch -p1 -s --no-backup-if-mismatch < "$p") || { log "patch failed: $p"; return 1; }
  done
}
