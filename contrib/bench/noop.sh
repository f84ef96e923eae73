#!/usr/bin/env bash
# Benchmark for the design goal "a run with nothing due costs about what listing the containers
# costs, at any number of containers". At each size (100, 1,000 and 5,000 by default) it
# measures guerite beside the floor, a bare `curl --unix-socket` of /containers/json?all=1:
#   - wall time (median, hyperfine), goal ≤ 1.5 x the floor's at 100, ≤ 1.3 x at 1,000,
#     ≤ 1.5 x at 5,000,
#   - CPU time, user + system (hyperfine's means), goal ≤ 3 x the floor's at 1,000,
#   - peak RSS (/usr/bin/time, max of BENCH_RSS_RUNS runs), goal ≤ 10 MiB at 100, ≤ 16 MiB at 1,000,
#   - Docker API calls, through a logging socat proxy: at most 2 (GET /version, GET /containers/json).
#
# Usage (from any directory):
#   contrib/bench/noop.sh                       builds target/release/guerite if stale
#   GUERITE_BIN=/path/to/guerite contrib/bench/noop.sh
#   BENCH_SIZES="100 1000" BENCH_RUNS=50 BENCH_ROUNDS=5 contrib/bench/noop.sh
#   BENCH_DOCKER_HOST=unix:///path/docker.sock contrib/bench/noop.sh   another engine than the bed's
#
# It sets up the test bed (contrib/testbed.sh) if target/testbed/env is missing, then grows one
# set of containers gbench-<runid>-NNNN from size to size (ascending), labelled with a key unique
# to this run (gbench<runid>.restart="0 0 1 1 *", i.e. nothing due). They are created with
# `docker create`, never started, at every size, so that the sizes compare with each other (the
# engine lists a created container much as a running one, and 5,000 running ones would not fit
# this machine); BENCH_PARALLEL (default 8) creates run side by side, through xargs. guerite
# is pointed at exactly those labels and at a private state file; at each size one warm-up run
# checks that nothing is due, then steady-state minute runs are measured: BENCH_RUNS (30) runs
# of each command, in BENCH_ROUNDS (3) rounds that take turns, pooled.
# Everything it created (containers found by the unique label, the temp dir, the socat it
# started) is removed on exit, including on failure or ctrl-C.
#
# Exit status: 0 when the benchmark ran (goals missed are printed as "MISSES GOAL"), non-zero
# only when the benchmark itself broke.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
runs=${BENCH_RUNS:-30}
rounds=${BENCH_ROUNDS:-3}
read -r -a sizes <<<"${BENCH_SIZES:-100 1000 5000}"
rss_runs=${BENCH_RSS_RUNS:-5}
parallel=${BENCH_PARALLEL:-8}

# The goals, by size; a size without one is measured and shown without a verdict.
declare -A goal_wall=([100]=1.5 [1000]=1.3 [5000]=1.5)
declare -A goal_cpu=([1000]=3)
declare -A goal_rss_mib=([100]=10 [1000]=16)

# shellcheck source=contrib/bench/lib.sh
source "$root/contrib/bench/lib.sh"
need hyperfine /usr/bin/time:time jq socat curl python3
((${#sizes[@]})) || die "BENCH_SIZES is empty"
[[ $runs =~ ^[1-9][0-9]*$ && $rounds =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS and BENCH_ROUNDS must be positive integers"
prev=0
for n in "${sizes[@]}"; do
  if ! [[ $n =~ ^[1-9][0-9]*$ ]] || ((n <= prev)); then
    die "BENCH_SIZES must be ascending positive integers: ${sizes[*]}"
  fi
  prev=$n
done
width=${#prev}
((width >= 4)) || width=4
use_bed
sock=${DOCKER_HOST#unix://}
use_binary

# --- run-private resources, and their cleanup --------------------------------------------------
runid=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
key=gbench$runid
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gbench.XXXXXX")
socat_pid=

ours() { docker ps -aq --filter "label=$key.restart" 2>/dev/null; }

cleanup() {
  local rc=$? ids
  trap - EXIT
  trap "" INT TERM # a second ctrl-C must not leave containers behind
  if [[ -n $socat_pid ]]; then
    kill "$socat_pid" 2>/dev/null || true
    wait "$socat_pid" 2>/dev/null || true
  fi
  # Only containers carrying this run's unique label key are ever removed. After an interrupt,
  # the engine may still finish a create whose `docker create` client was killed: look again a
  # few times until a second look finds none.
  local pass clean=0 t0
  for ((pass = 0; pass < 10; pass++)); do
    ids=$(ours || true)
    if [[ -n $ids ]]; then
      clean=0
      t0=$(date +%s)
      log "removing $(wc -w <<<"$ids") benchmark containers (label $key.restart)"
      xargs -n 100 -P 4 docker rm -f <<<"$ids" >/dev/null 2>&1 ||
        log "WARNING: could not remove some containers labelled $key.restart"
      log "removed in $(($(date +%s) - t0)) s"
    elif ((rc == 0 || ++clean >= 2)); then
      break
    fi
    ((rc == 0)) || sleep 1
  done
  [[ -z $(ours || true) ]] ||
    log "WARNING: containers labelled $key.restart remain; remove them with: docker rm -f \$(docker ps -aq --filter label=$key.restart)"
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# guerite reads its whole configuration from the environment: start from a clean slate so that
# a caller's GUERITE_SCOPE, GUERITE_DRY_RUN, notifications ... cannot skew the measurement.
while IFS= read -r v; do
  case $v in GUERITE_BIN | GUERITE_TEST_*) ;; *) unset "$v" ;; esac
done < <(compgen -e | grep '^GUERITE_' || true)
export GUERITE_STATE_FILE=$tmp/state/state.json
export GUERITE_RESTART_LABEL=$key.restart
export GUERITE_UPDATE_LABEL=$key.update
export GUERITE_RECREATE_LABEL=$key.recreate
export GUERITE_HEALTH_CHECK_LABEL=$key.health_check
mkdir -p "$tmp/state"

engine=$(docker version --format '{{.Server.Version}}')
curl_cmd="curl -s --unix-socket $(printf '%q' "$sock") http://localhost/containers/json?all=1 -o /dev/null"
bin_q=$(printf '%q' "$bin")

# ratio A B: A / B with two decimals.
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$1" "$2"; }
# within VALUE GOAL: 1 when VALUE ≤ GOAL (or there is no goal), else 0.
within() { python3 -c 'import sys; print(int(sys.argv[2] == "" or float(sys.argv[1]) <= float(sys.argv[2])))' "$1" "${2:-}"; }
miss() { (($1)) || printf '   MISSES GOAL'; }
ms() { python3 -c 'import sys; print(f"{float(sys.argv[1]) * 1000:.1f}")' "$1"; }
mib() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f}")' "$1"; }
goal() { if [[ -n ${1:-} ]]; then printf '≤ %s%s' "$1" "${2:-}"; else printf 'none'; fi; }

# grow N: creates benchmark containers until there are N, in parallel; grow_s says how long.
have=0
grow_s=0
grow() {
  local n=$1 t0 count
  log "creating $((n - have)) containers gbench-$runid-NNNN (label $key.restart=\"0 0 1 1 *\", $parallel at a time)"
  t0=$(date +%s)
  seq -f "%0${width}g" $((have + 1)) "$n" |
    xargs -P "$parallel" -I{} docker create --network none --label "$key.restart=0 0 1 1 *" \
      --name "gbench-$runid-{}" "$image" >/dev/null ||
    die "creating the containers failed"
  count=$(ours | wc -l)
  ((count == n)) || die "expected $n benchmark containers, found $count"
  grow_s=$(($(date +%s) - t0))
  log "created in $grow_s s"
  have=$n
}

# rss_of COMMAND...: the largest peak RSS, KiB, of rss_runs runs.
rss_of() {
  local max=0 kib i
  for ((i = 0; i < rss_runs; i++)); do
    /usr/bin/time -f %M -o "$tmp/rss" "$@" >/dev/null 2>"$tmp/rss-run.err" ||
      { cat "$tmp/rss-run.err" >&2; die "$1 under /usr/bin/time failed"; }
    kib=$(tail -n1 "$tmp/rss")
    [[ $kib =~ ^[0-9]+$ ]] || die "unexpected /usr/bin/time output: $kib"
    if ((kib > max)); then max=$kib; fi
  done
  echo "$max"
}

# measure N: one size's figures, printed as a block and kept for the summary.
measure() {
  local n=$1 warm monitored api total list_kib
  total=$(docker ps -aq | wc -l)

  # The warm-up run creates or extends the state file; it must find nothing due.
  warm=$("$bin" run --json 2>"$tmp/warm.err") || { cat "$tmp/warm.err" >&2; die "warm-up guerite run failed"; }
  [[ -s $GUERITE_STATE_FILE ]] || die "warm-up run wrote no state file"
  monitored=$(jq -r .monitored <<<"$warm") || die "warm-up report is not JSON: $warm"
  ((monitored == n)) || die "warm-up run monitored $monitored containers, expected $n"
  [[ $(jq -c .items <<<"$warm") == "[]" ]] || die "warm-up run was not a no-op: $(jq -c .items <<<"$warm")"
  api=$(jq -r .api_version <<<"$warm")
  list_kib=$(($(curl -s --unix-socket "$sock" 'http://localhost/containers/json?all=1' | wc -c) / 1024))
  log "$n containers: $monitored monitored, nothing due, API $api, list $list_kib KiB"

  # Wall and CPU time. hyperfine runs one command's runs, then the other's; the engine's
  # listing time drifts over a minute (the floor is mostly the engine), so the runs are split
  # into rounds that take turns, and pooled.
  local round per=$(((runs + rounds - 1) / rounds))
  for ((round = 1; round <= rounds; round++)); do
    log "hyperfine: round $round of $rounds, $per runs each"
    hyperfine -N --style basic --warmup 3 --runs "$per" --output=null \
      --export-json "$tmp/hyperfine-$n-$round.json" \
      -n guerite "$bin_q run" -n curl "$curl_cmd" >&2 || die "hyperfine failed"
  done
  local g_med c_med g_cpu c_cpu
  read -r g_med c_med g_cpu c_cpu < <(python3 -c '
import json, statistics, sys
pooled = {}
for path in sys.argv[1:]:
    for r in json.load(open(path))["results"]:
        p = pooled.setdefault(r["command"], {"times": [], "cpu": []})
        p["times"] += r["times"]
        p["cpu"] += [r["user"] + r["system"]] * len(r["times"])
g, c = pooled["guerite"], pooled["curl"]
print(statistics.median(g["times"]), statistics.median(c["times"]),
      statistics.mean(g["cpu"]), statistics.mean(c["cpu"]))' "$tmp"/hyperfine-"$n"-*.json) ||
    die "could not read hyperfine's JSON"
  [[ -n $c_cpu ]] || die "could not read hyperfine's JSON"

  # API calls, through a logging proxy.
  local proxy=$tmp/proxy.sock proxied ncalls calls short i
  rm -f "$proxy" "$tmp/socat.log"
  socat -v "UNIX-LISTEN:$proxy,fork" "UNIX-CONNECT:$sock" 2>"$tmp/socat.log" &
  socat_pid=$!
  for ((i = 0; i < 100; i++)); do [[ -S $proxy ]] && break; sleep 0.05; done
  [[ -S $proxy ]] || die "socat proxy did not come up"
  proxied=$(DOCKER_HOST=unix://$proxy "$bin" run --json 2>"$tmp/proxy-run.err") ||
    { cat "$tmp/proxy-run.err" >&2; die "guerite run through the proxy failed"; }
  [[ $(jq -c .items <<<"$proxied") == "[]" ]] || die "the proxied run was not a no-op: $proxied"
  sleep 0.2 # let socat's children finish writing their dump
  kill "$socat_pid" 2>/dev/null || true
  wait "$socat_pid" 2>/dev/null || true
  socat_pid=
  mapfile -t calls < <(grep -aE '^(GET|POST|HEAD|PUT|DELETE|PATCH) /' "$tmp/socat.log" |
    sed 's/\\r$//; s/ HTTP\/1\.[01]\r\?$//' || true)
  ncalls=${#calls[@]}
  ((ncalls > 0)) || die "the proxy logged no request"
  # Shown without the /vX.YY prefix and query string, e.g. "GET /containers/json".
  short=$(printf '%s\n' "${calls[@]}" | sed -E 's# /v[0-9.]+/# /#; s#\?.*##' | paste -sd, - | sed 's/,/, /g')

  # Peak RSS.
  local g_kib c_kib
  g_kib=$(rss_of "$bin" run)
  c_kib=$(rss_of curl -s --unix-socket "$sock" 'http://localhost/containers/json?all=1' -o /dev/null)

  local wall_r cpu_r rss_r wall_ok cpu_ok rss_ok api_ok g_mib c_mib
  wall_r=$(ratio "$g_med" "$c_med")
  cpu_r=$(ratio "$g_cpu" "$c_cpu")
  rss_r=$(ratio "$g_kib" "$c_kib")
  g_mib=$(mib "$g_kib")
  c_mib=$(mib "$c_kib")
  wall_ok=$(within "$wall_r" "${goal_wall[$n]:-}")
  cpu_ok=$(within "$cpu_r" "${goal_cpu[$n]:-}")
  rss_ok=$(within "$(python3 -c 'import sys; print(int(sys.argv[1]) / 1024)' "$g_kib")" "${goal_rss_mib[$n]:-}")
  api_ok=$((ncalls <= 2))

  {
    echo
    echo "noop run, $n monitored containers (created, not running; $total on the engine; list $list_kib KiB), nothing due (docker $engine, API $api)"
    printf '  wall   guerite %7s ms   curl %7s ms   ratio %5s   goal %s%s   (median of %s runs in %s rounds)\n' \
      "$(ms "$g_med")" "$(ms "$c_med")" "$wall_r" "$(goal "${goal_wall[$n]:-}" ' x')" "$(miss "$wall_ok")" "$((per * rounds))" "$rounds"
    printf '  CPU    guerite %7s ms   curl %7s ms   ratio %5s   goal %s%s   (user+sys, mean)\n' \
      "$(ms "$g_cpu")" "$(ms "$c_cpu")" "$cpu_r" "$(goal "${goal_cpu[$n]:-}" ' x')" "$(miss "$cpu_ok")"
    printf '  RSS    guerite %7s MiB  curl %7s MiB  ratio %5s   goal %s%s   (peak, max of %s)\n' \
      "$g_mib" "$c_mib" "$rss_r" "$(goal "${goal_rss_mib[$n]:-}" ' MiB')" "$(miss "$rss_ok")" "$rss_runs"
    printf '  API    %s calls: %s   goal ≤ 2%s\n' "$ncalls" "$short" "$(miss "$api_ok")"
    printf '  setup  %s containers created in %s s, %s at a time\n' "$((n - prev_n))" "$grow_s" "$parallel"
  } >"$tmp/block"
  cat "$tmp/block" >&2
  cat "$tmp/block" >>"$tmp/summary"
}

t_start=$(date +%s)
prev_n=0
for n in "${sizes[@]}"; do
  grow "$n"
  measure "$n"
  prev_n=$n
done
echo
echo "=== summary (guerite $bin, $(($(date +%s) - t_start)) s before cleanup) ==="
cat "$tmp/summary"
