# Sourced by the device scripts that compare trees: mk NAME [PATCH...] makes $W/NAME, a
# copy of this tree (the caller's working directory) with the patches applied. Needs W
# and a log function.
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
