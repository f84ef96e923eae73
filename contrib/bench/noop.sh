#!/usr/bin/env bash
# Benchmark for the design goal "a run with nothing due over 100 monitored containers":
#   - at most 2 Docker API calls (GET /version, GET /containers/json),
#   - wall time at most 1.5 x a bare `curl --unix-socket` of /containers/json?all=1,
#   - peak RSS at most 10 MiB.
#
# Usage (from any directory):
#   contrib/bench/noop.sh                       builds target/release/guerite if stale
#   GUERITE_BIN=/path/to/guerite contrib/bench/noop.sh
#   BENCH_RUNS=50 BENCH_CONTAINERS=100 contrib/bench/noop.sh
#   BENCH_DOCKER_HOST=unix:///path/docker.sock contrib/bench/noop.sh   another engine than the bed's
#
# It sets up the test bed (contrib/testbed.sh) if target/testbed/env is missing, creates
# BENCH_CONTAINERS containers gbench-<runid>-NNN labelled with a key unique to this run
# (gbench<runid>.restart="0 0 1 1 *", i.e. nothing due), points guerite at exactly those labels
# and at a private state file, does one warm-up run, then measures steady-state minute runs:
# wall time with hyperfine against curl, API calls through a logging socat proxy, and peak RSS
# with /usr/bin/time. Everything it created (containers found by the unique label, the temp
# dir, the socat it started) is removed on exit, including on failure or ctrl-C.
#
# Exit status: 0 when the benchmark ran (goals missed are printed as "MISSES GOAL"), non-zero
# only when the benchmark itself broke.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
runs=${BENCH_RUNS:-30}
count=${BENCH_CONTAINERS:-100}
rss_runs=${BENCH_RSS_RUNS:-5}

# shellcheck source=contrib/bench/lib.sh
source "$root/contrib/bench/lib.sh"
need hyperfine /usr/bin/time:time jq socat curl
use_bed
sock=${DOCKER_HOST#unix://}
use_binary

# --- run-private resources, and their cleanup --------------------------------------------------
runid=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
key=gbench$runid
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gbench.XXXXXX")
socat_pid=

cleanup() {
  local rc=$? ids
  trap - EXIT
  trap "" INT TERM # a second ctrl-C must not leave containers behind
  if [[ -n $socat_pid ]]; then
    kill "$socat_pid" 2>/dev/null || true
    wait "$socat_pid" 2>/dev/null || true
  fi
  # Only containers carrying this run's unique label key are ever removed. After an interrupt,
  # the engine may still finish a create whose `docker run` client was killed: look again a few
  # times until a second look finds none.
  local pass clean=0
  for ((pass = 0; pass < 10; pass++)); do
    ids=$(docker ps -aq --filter "label=$key.restart" 2>/dev/null || true)
    if [[ -n $ids ]]; then
      clean=0
      log "removing $(wc -w <<<"$ids") benchmark containers (label $key.restart)"
      # shellcheck disable=SC2086
      docker rm -f $ids >/dev/null 2>&1 || log "WARNING: could not remove some containers labelled $key.restart"
    elif ((rc == 0 || ++clean >= 2)); then
      break
    fi
    ((rc == 0)) || sleep 1
  done
  [[ -z $(docker ps -aq --filter "label=$key.restart" 2>/dev/null) ]] ||
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

# --- containers --------------------------------------------------------------------------------
log "creating $count containers gbench-$runid-NNN (label $key.restart=\"0 0 1 1 *\")"
t0=$(date +%s)
seq -f %03g 1 "$count" |
  xargs -P 4 -I{} docker run -d --network none --label "$key.restart=0 0 1 1 *" \
    --name "gbench-$runid-{}" "$image" >/dev/null ||
  die "creating the containers failed"
running=$(docker ps -q --filter "label=$key.restart" --filter status=running | wc -l)
((running == count)) || die "expected $count running benchmark containers, found $running"
log "created in $(($(date +%s) - t0)) s"
total=$(docker ps -aq | wc -l)

# --- warm-up: the first run creates the state file ---------------------------------------------
warm=$("$bin" run --json 2>"$tmp/warm.err") || { cat "$tmp/warm.err" >&2; die "warm-up guerite run failed"; }
[[ -s $GUERITE_STATE_FILE ]] || die "warm-up run wrote no state file"
monitored=$(jq -r .monitored <<<"$warm") || die "warm-up report is not JSON: $warm"
((monitored == count)) || die "warm-up run monitored $monitored containers, expected $count"
# Nothing may be due: otherwise this would not measure a no-op run.
[[ $(jq -c .items <<<"$warm") == "[]" ]] || die "warm-up run was not a no-op: $(jq -c .items <<<"$warm")"
api=$(jq -r .api_version <<<"$warm")
log "warm-up: $monitored containers monitored, nothing due, API $api"

# --- wall time ---------------------------------------------------------------------------------
log "hyperfine: $runs runs each"
curl_cmd="curl -s --unix-socket $(printf '%q' "$sock") http://localhost/containers/json?all=1 -o /dev/null"
hyperfine -N --style basic --warmup 3 --runs "$runs" --output=null \
  --export-json "$tmp/hyperfine.json" \
  -n guerite "$(printf '%q' "$bin") run" \
  -n curl "$curl_cmd" >&2 ||
  die "hyperfine failed"
g_med=$(jq -r '.results[] | select(.command == "guerite") | .median' "$tmp/hyperfine.json")
c_med=$(jq -r '.results[] | select(.command == "curl") | .median' "$tmp/hyperfine.json")
[[ -n $g_med && -n $c_med ]] || die "could not read medians from hyperfine's JSON"
read -r g_ms c_ms ratio wall_ok < <(python3 -c '
import sys
g, c = float(sys.argv[1]), float(sys.argv[2])
r = g / c
print(f"{g*1000:.1f} {c*1000:.1f} {r:.2f} {int(r <= 1.5)}")' "$g_med" "$c_med")

# --- API calls, through a logging proxy --------------------------------------------------------
proxy=$tmp/proxy.sock
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
((ncalls > 0)) || die "the proxy logged no request (socat log: $tmp/socat.log)"
api_ok=$((ncalls <= 2))
# Shown without the /vX.YY prefix and query string, e.g. "GET /containers/json".
short=$(printf '%s\n' "${calls[@]}" | sed -E 's# /v[0-9.]+/# /#; s#\?.*##' | paste -sd, - | sed 's/,/, /g')

# --- peak RSS ----------------------------------------------------------------------------------
max_kib=0
for ((i = 0; i < rss_runs; i++)); do
  /usr/bin/time -f %M -o "$tmp/rss" "$bin" run >/dev/null 2>"$tmp/rss-run.err" ||
    { cat "$tmp/rss-run.err" >&2; die "guerite run under /usr/bin/time failed"; }
  kib=$(tail -n1 "$tmp/rss")
  [[ $kib =~ ^[0-9]+$ ]] || die "unexpected /usr/bin/time output: $kib"
  if ((kib > max_kib)); then max_kib=$kib; fi
done
read -r max_mib rss_ok < <(python3 -c '
import sys
k = int(sys.argv[1])
print(f"{k/1024:.1f} {int(k <= 10*1024)}")' "$max_kib")

# --- result ------------------------------------------------------------------------------------
engine=$(docker version --format '{{.Server.Version}}')
miss() { (($1)) || printf '   MISSES GOAL'; }
echo
echo "noop run, $count monitored containers ($total on the engine), nothing due (docker $engine, API $api)"
printf '  wall   guerite %s ms (median of %s)   curl floor %s ms   ratio %s  (goal ≤ 1.5)%s\n' \
  "$g_ms" "$runs" "$c_ms" "$ratio" "$(miss "$wall_ok")"
printf '  API    %s calls: %s   (goal ≤ 2)%s\n' "$ncalls" "$short" "$(miss "$api_ok")"
printf '           %s\n' "${calls[@]}"
printf '  RSS    %s MiB peak (%s KiB, max of %s runs) (goal ≤ 10 MiB)%s\n' \
  "$max_mib" "$max_kib" "$rss_runs" "$(miss "$rss_ok")"
