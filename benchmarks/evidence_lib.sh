# Shared by the evidence scripts (sourced): run one resumable `obstruct` row and copy finished stages.
# The sourcing script sets OB (the obstruct command), CMD (its subcommand), COMMON (shared flags) and R (out dir).
run() { # name, extra args
  local name=$1; shift
  echo "== $name $(date +%T)"
  /usr/bin/time -f "$name wall %e s maxrss %M KB" $OB $CMD $COMMON --out "$R/$name" "$@" > "$R/$name.log" 2>&1
  tail -1 "$R/$name.log"
}
share() { # from, to, stage...: copy finished stages (folders under checkpoints/) of another run, once it is done
  local from=$1 to=$2; shift 2
  while [ ! -f "$R/$from/results.json" ]; do sleep 20; done
  for stage in "$@"; do
    mkdir -p "$(dirname "$R/$to/checkpoints/$stage")"
    [ -d "$R/$to/checkpoints/$stage" ] || cp -r "$R/$from/checkpoints/$stage" "$R/$to/checkpoints/$stage"
  done
}
