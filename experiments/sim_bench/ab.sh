#!/bin/bash
# Side-by-side `rlroute bench sim` of two source trees, alternating, on the same machine state.
#   experiments/sim_bench/ab.sh ROUNDS OUT.jsonl before=DIR_A after=DIR_B
# DIR_* are checkouts of the commits to compare (e.g. `git archive <commit> | tar -x -C DIR`); each run is
# one `rlroute bench sim --no-profile` (best of 3 loops inside) with that tree first on PYTHONPATH, under
# nice 10; one JSON line per run with the load average before and after it.
set -euo pipefail
rounds=$1; out=$2; shift 2
py=${PYTHON:-$(pwd)/.venv/bin/python}
: > "$out"
for r in $(seq "$rounds"); do
  for ld in "$@"; do
    label=${ld%%=*}; d=${ld#*=}
    l0=$(cut -d' ' -f1 /proc/loadavg)
    js=$(cd "$d" && PYTHONPATH="$d" nice -n 10 "$py" -m rlroute.cli bench sim --no-profile --out "$(mktemp)" 2>/dev/null | tail -1)
    l1=$(cut -d' ' -f1 /proc/loadavg)
    echo "$js" | "$py" -c "
import json, sys
d = json.loads(sys.stdin.read())
print(json.dumps({'round': $r, 'label': '$label', 'load_before': $l0, 'load_after': $l1, 'value': d['value'],
                  'with_state': d['with_state_decisions_per_s'], 'wall': d['wall_decisions_per_s'],
                  'with_state_wall': d['with_state_wall_decisions_per_s']}))" | tee -a "$out"
  done
done
