#!/usr/bin/env bash
# Benchmark for two design goals (design.md §13):
#   - an update check when nothing changed: one registry HEAD per distinct image reference,
#     no manifest GET, no blob GET, no pull;
#   - swap downtime for a container that stops promptly: at most 1.5 x `docker restart` of the
#     same container.
#
# Usage (from any directory):
#   contrib/bench/update.sh                     builds target/release/guerite if stale
#   GUERITE_BIN=/path/to/guerite contrib/bench/update.sh
#   BENCH_REFS=5 BENCH_PER_REF=4 BENCH_SWAP_RUNS=7 contrib/bench/update.sh   (the defaults)
#
# Update check: builds BENCH_REFS tiny images FROM the test bed's busybox (a LABEL makes each one
# distinct), pushes them to the test bed's open registry as $GUERITE_TEST_REGISTRY/gbench<runid>/
# app<N>:1, starts BENCH_PER_REF containers of each (--network none, update label
# gbench<runid>.update), then runs `guerite run --force update --json` once and counts, for this
# run's repositories only, the requests in the registry's access log and the engine's pull events.
#
# Swap downtime: one container gbench-<runid>-web serving HTTP with busybox httpd on a published
# port 127.0.0.1:<free port>, and a probe on the host (python3: connect, GET /, expect "200" and
# "ok", every ~10 ms) that records when each answer arrived. Downtime is the longest interval
# between two answers around the operation. Alternately `docker restart -t 10` and a guerite swap
# to a new version of its image (built and pushed before the probe starts; `guerite run --force
# update --only <name>` with GUERITE_SETTLE_SECONDS=1), BENCH_SWAP_RUNS times each. The engine's
# events (die, stop, rename, start) split the downtime into phases, and die (old) -> start (new)
# is reported beside it as a probe-independent measure: with docker-proxy, a start of either kind
# often leaves the host's ARP entry for the container unanswered until the kernel's ARP retry
# (1 s), which the probe rightly sees as downtime but which is noise for the ratio ("*" per run).
#
# Everything it created is removed on exit, including on failure or ctrl-C: containers (found by
# the run's unique label key), images (found by the run's unique image label), the manifests it
# pushed (DELETE by digest; the test bed's registry has deletion enabled), the probe (by pid) and
# the temp dir.
#
# Exit status: 0 when the benchmark ran (goals missed are printed as "MISSES GOAL"), non-zero
# only when the benchmark itself broke.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
nrefs=${BENCH_REFS:-5}
per_ref=${BENCH_PER_REF:-4}
swap_runs=${BENCH_SWAP_RUNS:-7}
[[ $nrefs =~ ^[1-9][0-9]*$ && $per_ref =~ ^[1-9][0-9]*$ && $swap_runs =~ ^[1-9][0-9]*$ ]] ||
  { echo "bench: BENCH_REFS, BENCH_PER_REF and BENCH_SWAP_RUNS must be positive integers" >&2; exit 2; }
ncontainers=$((nrefs * per_ref))

# shellcheck source=contrib/bench/lib.sh
source "$root/contrib/bench/lib.sh"
need jq curl python3
use_bed
registry=${GUERITE_TEST_REGISTRY:-}
reglog=${GUERITE_TEST_REGISTRY_LOG:-}
[[ -n $registry ]] || die "GUERITE_TEST_REGISTRY is not set by target/testbed/env"
[[ -f $reglog ]] || die "the registry access log GUERITE_TEST_REGISTRY_LOG=$reglog is missing"
curl -fsS --max-time 5 -o /dev/null "http://$registry/v2/" || die "the registry $registry does not answer"
use_binary

# --- run-private resources, and their cleanup --------------------------------------------------
runid=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
key=gbench$runid
repo_prefix=$key # repositories $registry/gbench<runid>/...
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gbench.XXXXXX")
probe_pid=
: >"$tmp/pushed" # "<repository> <digest>" of every manifest pushed, deleted on exit

stop_probe() {
  if [[ -n $probe_pid ]]; then
    kill "$probe_pid" 2>/dev/null || true
    wait "$probe_pid" 2>/dev/null || true
    probe_pid=
  fi
}

cleanup() {
  local rc=$? ids pass clean=0 repo digest code
  trap - EXIT
  trap "" INT TERM # a second ctrl-C must not leave containers behind
  stop_probe
  # Only containers carrying this run's unique label key are ever removed (guerite's own
  # -guerite-old-/-guerite-new- containers copy it). After an interrupt, the engine may still
  # finish a create whose client was killed: look again until a second look finds none.
  for ((pass = 0; pass < 10; pass++)); do
    ids=$(docker ps -aq --filter "label=$key.update" 2>/dev/null || true)
    if [[ -n $ids ]]; then
      clean=0
      log "removing $(wc -w <<<"$ids") benchmark containers (label $key.update)"
      # shellcheck disable=SC2086
      docker rm -f $ids >/dev/null 2>&1 || log "WARNING: could not remove some containers labelled $key.update"
    elif ((rc == 0 || ++clean >= 2)); then
      break
    fi
    ((rc == 0)) || sleep 1
  done
  [[ -z $(docker ps -aq --filter "label=$key.update" 2>/dev/null) ]] ||
    log "WARNING: containers labelled $key.update remain; remove them with: docker rm -f \$(docker ps -aq --filter label=$key.update)"
  # Images: every one built here carries the label $key.bench (its intermediate layers too).
  # Tagged and dangling top-level images first (removing one prunes its untagged parents),
  # then whatever intermediate layer is left.
  for pass in top all; do
    if [[ $pass == top ]]; then
      ids=$(docker images -q --filter "label=$key.bench" 2>/dev/null | sort -u || true)
    else
      ids=$(docker images -aq --filter "label=$key.bench" 2>/dev/null | sort -u || true)
    fi
    # shellcheck disable=SC2086
    [[ -z $ids ]] || docker rmi -f $ids >/dev/null 2>&1 || true
  done
  [[ -z $(docker images -aq --filter "label=$key.bench" 2>/dev/null) ]] ||
    log "WARNING: images labelled $key.bench remain; remove them with: docker rmi -f \$(docker images -aq --filter label=$key.bench)"
  # The manifests pushed to the test bed's registry, by digest (their blobs stay until the
  # registry's garbage collection, as for every test).
  while read -r repo digest; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X DELETE \
      "http://$registry/v2/$repo/manifests/$digest" 2>/dev/null || true)
    [[ $code == 202 || $code == 404 ]] ||
      log "WARNING: could not delete $registry/$repo@$digest from the registry (HTTP $code)"
  done < <(sort -u "$tmp/pushed" 2>/dev/null || true)
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

now() { date +%s.%N; }

# Builds $1 (a reference) from the Dockerfile lines $2 on the test bed's busybox, pushes it and
# records the pushed digest for the cleanup.
build_push() {
  local ref=$1 lines=$2 ctx repo digest
  ctx=$tmp/build-${ref//[\/:]/_}
  mkdir -p "$ctx/www"
  echo ok >"$ctx/www/index.html"
  printf 'FROM %s\nLABEL %s.bench=1\n%s\n' "$image" "$key" "$lines" >"$ctx/Dockerfile"
  docker build -q -t "$ref" "$ctx" >"$tmp/build.log" 2>&1 ||
    { cat "$tmp/build.log" >&2; die "docker build $ref failed"; }
  docker push "$ref" >"$tmp/push.log" 2>&1 || { cat "$tmp/push.log" >&2; die "docker push $ref failed"; }
  digest=$(sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' "$tmp/push.log" | tail -n1)
  [[ -n $digest ]] || { cat "$tmp/push.log" >&2; die "no digest in the output of docker push $ref"; }
  repo=${ref#"$registry"/}
  repo=${repo%:*}
  echo "$repo $digest" >>"$tmp/pushed"
}

stops_promptly='trap '\''exit 0'\'' TERM; sleep 3600 & wait'

# === 1. update check, nothing changed ==========================================================
log "building and pushing $nrefs images $registry/$repo_prefix/app<N>:1"
for ((n = 1; n <= nrefs; n++)); do
  build_push "$registry/$repo_prefix/app$n:1" "LABEL gbench.ref=app$n"
done

log "starting $ncontainers containers gbench-$runid-app<N>-<i> (label $key.update)"
for ((n = 1; n <= nrefs; n++)); do
  for ((i = 1; i <= per_ref; i++)); do
    echo "$n $i"
  done
done | xargs -P 4 -n 2 sh -c '
  exec docker run -d --network none --label "$0.update=0 0 1 1 *" --name "$1-app$4-$5" \
    "$2/app$4:1" sh -c "$3" >/dev/null' "$key" "gbench-$runid" "$registry/$repo_prefix" "$stops_promptly" ||
  die "starting the containers failed"
running=$(docker ps -q --filter "label=$key.update" --filter status=running | wc -l)
((running == ncontainers)) || die "expected $ncontainers running benchmark containers, found $running"

offset=$(stat -c %s "$reglog")
since=$(now)
t0=$(date +%s%N)
"$bin" run --force update --json >"$tmp/check.json" 2>"$tmp/check.err" ||
  { cat "$tmp/check.err" >&2; die "guerite run --force update failed"; }
t1=$(date +%s%N)
check_ms=$(((t1 - t0) / 1000000))
sleep 0.5 # the registry writes its access line after answering
until=$(now)

monitored=$(jq -r .monitored "$tmp/check.json") || die "the report is not JSON: $(cat "$tmp/check.json")"
((monitored == ncontainers)) || die "guerite monitored $monitored containers, expected $ncontainers"
api=$(jq -r .api_version "$tmp/check.json")
nitems=$(jq '.items | length' "$tmp/check.json")
uptodate=$(jq '[.items[] | select(.outcome == "up_to_date")] | length' "$tmp/check.json")
others=$(jq -r '[.items[] | select(.outcome != "up_to_date") | "\(.container): \(.outcome) \(.detail)"] | join("; ")' "$tmp/check.json")

# Combined-format lines only ("response completed" lines have no quoted request line), for this
# run's repositories only.
tail -c +$((offset + 1)) "$reglog" |
  grep -aE "\"[A-Z]+ /v2/$repo_prefix/[^ ]+ HTTP/1\.[01]\"" >"$tmp/reglines" || true
count() { grep -cE "$1" "$tmp/reglines" || true; }
m_head=$(count '"HEAD /v2/[^ ]+/manifests/')
m_get=$(count '"GET /v2/[^ ]+/manifests/')
b_get=$(count '"GET /v2/[^ ]+/blobs/')
r_all=$(wc -l <"$tmp/reglines")
r_other=$((r_all - m_head - m_get - b_get))
pulls=$(docker events --since "$since" --until "$until" --filter type=image --filter event=pull \
  --format '{{.Actor.ID}}' | grep -cF "$registry/$repo_prefix/" || true)

ok_head=$((m_head == nrefs))
ok_get=$((m_get == 0 && b_get == 0))
ok_pull=$((pulls == 0))
ok_report=$((uptodate == ncontainers && nitems == ncontainers))

# The check containers are not needed any more.
# shellcheck disable=SC2046
docker rm -f $(docker ps -aq --filter "label=$key.update") >/dev/null

# === 2. swap downtime ==========================================================================
cat >"$tmp/probe.py" <<'EOF'
# Starts a request to http://127.0.0.1:PORT/ every ~10 ms, without waiting for the previous ones
# (a connection that docker-proxy accepted while the container's network is not up yet can hang
# for a second: a sequential probe would be blind meanwhile). One line per attempt:
# "<ns started> <ns ended> <1|0>"; 1 means a complete HTTP 200 answer whose body is "ok" (the
# proxy accepting a connection while nothing listens in the container does not count).
import asyncio, signal, sys, time
port, out = int(sys.argv[1]), open(sys.argv[2], "w", buffering=1)
REQ = b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"

async def attempt():
    t0, ok = time.time_ns(), False
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        try:
            w.write(REQ)
            data = await asyncio.wait_for(r.read(), 2)
        finally:
            w.close()
        ok = data.split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"200"] and data.endswith(b"\r\n\r\nok\n")
    except (OSError, asyncio.TimeoutError):
        pass
    out.write(f"{t0} {time.time_ns()} {int(ok)}\n")

async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = set()
    while not stop.is_set():
        t = asyncio.create_task(attempt())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        try:
            await asyncio.wait_for(stop.wait(), 0.01)
        except asyncio.TimeoutError:
            pass

asyncio.run(main())
EOF

cat >"$tmp/analyse.py" <<'EOF'
# One operation: the longest interval between two answers (by the time they arrived) that ends
# after the operation began, and where it went according to the engine's events (kill, die,
# stop of the old container; rename, start of the new one). Prints one JSON object.
import json, sys
probe, events, old, new, t_op = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
lines = [l.split() for l in open(probe) if len(l.split()) == 3]
oks = sorted(int(end) for _, end, ok in lines if ok == "1")
attempts = sorted(int(start) for start, _, _ in lines)
gaps = [(b - a, a, b) for a, b in zip(oks, oks[1:]) if b > t_op]
if not gaps:
    sys.exit("no answer after the operation began")
gap, lost, back = max(gaps)
ev = {}
for l in open(events):
    parts = l.split()
    if len(parts) < 3:
        continue
    t, action, cid = int(parts[0]), parts[1], parts[2]
    if t < t_op:
        continue
    if cid == old and action in ("kill", "die", "stop"):
        ev.setdefault(action, t)
    if cid == new and action in ("rename", "start"):
        ev[action] = t  # the last rename of the new container gives it the name
ms = lambda a, b: None if a is None or b is None else (b - a) / 1e6
period = sorted(b - a for a, b in zip(attempts, attempts[1:]))
print(json.dumps({
    "downtime": gap / 1e6,
    "lost_die": ms(lost, ev.get("die")),
    "die_stop": ms(ev.get("die"), ev.get("stop")),
    "stop_rename": ms(ev.get("stop"), ev.get("rename")) if old != new else None,
    "to_start": ms(ev.get("rename") if old != new else ev.get("stop"), ev.get("start")),
    "start_back": ms(ev.get("start"), back),
    "die_start": ms(ev.get("die"), ev.get("start")),
    "period": period[len(period) // 2] / 1e6 if period else None,
}))
EOF

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
web=gbench-$runid-web
webref=$registry/$repo_prefix/web:current
webcmd='trap '\''exit 0'\'' TERM; httpd -f -p 8080 -h /www & wait'
web_lines() { printf 'LABEL version=%s\nCOPY www /www\nCMD ["sh", "-c", "%s"]' "$1" "$webcmd"; }

log "starting $web (busybox httpd, published on 127.0.0.1:$port)"
build_push "$webref" "$(web_lines 1)"
docker run -d --name "$web" --label "$key.update=0 0 1 1 *" -p "127.0.0.1:$port:8080" \
  "$webref" >/dev/null || die "starting $web failed"
for ((i = 0; i < 100; i++)); do
  curl -fs --max-time 0.2 "http://127.0.0.1:$port/" 2>/dev/null | grep -qx ok && break
  sleep 0.1
done
((i < 100)) || die "$web does not answer on 127.0.0.1:$port (published ports not working on this engine?)"

# measure <restart|guerite> <rep>: runs the operation under the probe, appends one JSON line to
# $tmp/<kind>.jsonl.
measure() {
  local kind=$1 rep=$2 pf=$tmp/probe-$1-$2.log old new t_op t_end i n out
  old=$(docker inspect -f '{{.Id}}' "$web")
  python3 "$tmp/probe.py" "$port" "$pf" &
  probe_pid=$!
  for ((i = 0; i < 500; i++)); do
    n=$(grep -c ' 1$' "$pf" 2>/dev/null) || true
    ((${n:-0} >= 20)) && break
    sleep 0.01
  done
  ((i < 500)) || die "the probe does not get answers from $web before the $kind"
  t_op=$(date +%s%N)
  case $kind in
  restart)
    docker restart -t 10 "$web" >/dev/null || die "docker restart $web failed"
    ;;
  guerite)
    out=$(GUERITE_SETTLE_SECONDS=1 "$bin" run --force update --only "$web" --json 2>"$tmp/swap.err") ||
      { cat "$tmp/swap.err" >&2; die "guerite swap of $web failed: $out"; }
    [[ $(jq -r --arg n "$web" '[.items[] | select(.container == $n) | .outcome] | join(",")' <<<"$out") == done ]] ||
      die "guerite did not replace $web: $(jq -c .items <<<"$out")"
    ;;
  esac
  t_end=$(date +%s%N)
  # wait for answers after the operation returned, then a little more
  for ((i = 0; i < 3000; i++)); do
    awk -v t="$t_end" '$3 == 1 && $2 > t { f = 1 } END { exit !f }' "$pf" && break
    sleep 0.01
  done
  ((i < 3000)) || die "$web does not answer 30 s after the $kind"
  sleep 0.1
  stop_probe
  new=$(docker inspect -f '{{.Id}}' "$web")
  if [[ $kind == restart ]]; then
    [[ $new == "$old" ]] || die "docker restart changed the container ID"
  else
    [[ $new != "$old" ]] || die "guerite reported done but $web has the same ID"
  fi
  docker events --since "${t_op:0:10}.${t_op:10}" --until "$(now)" --filter type=container \
    --filter "label=$key.update" --format '{{.TimeNano}} {{.Action}} {{.Actor.ID}}' >"$tmp/events-$kind-$rep"
  python3 "$tmp/analyse.py" "$pf" "$tmp/events-$kind-$rep" "$old" "$new" "$t_op" >>"$tmp/$kind.jsonl" ||
    die "could not analyse the $kind probe ($pf)"
}

log "downtime: $swap_runs x docker restart and $swap_runs x guerite swap, alternately"
for ((r = 1; r <= swap_runs; r++)); do
  measure restart "$r"
  build_push "$webref" "$(web_lines $((r + 1)))" # v2, v3, ... before the probe starts
  measure guerite "$r"
  [[ $(docker inspect -f '{{index .Config.Labels "version"}}' "$web") == $((r + 1)) ]] ||
    die "$web does not run version $((r + 1)) after the swap"
done

summary=$(python3 - "$tmp/restart.jsonl" "$tmp/guerite.jsonl" <<'EOF'
import json, statistics, sys
STALL = 300
def load(p):
    return [json.loads(l) for l in open(p)]
def med(rows, k):
    v = [r[k] for r in rows if r.get(k) is not None]
    return statistics.median(v) if v else None
r, g = load(sys.argv[1]), load(sys.argv[2])
out = {"restart": {}, "guerite": {}}
for name, rows in (("restart", r), ("guerite", g)):
    for k in ("downtime", "lost_die", "die_stop", "stop_rename", "to_start", "start_back",
              "die_start", "period"):
        out[name][k] = med(rows, k)
    # "*": the first answer came more than STALL ms after the engine's start event.
    out[name]["runs"] = " ".join(
        f"{x['downtime']:.0f}" + ("*" if (x.get("start_back") or 0) > STALL else "") for x in rows)
    out[name]["stalled"] = sum((x.get("start_back") or 0) > STALL for x in rows)
out["ratio"] = out["guerite"]["downtime"] / out["restart"]["downtime"]
rs, gs = out["restart"]["die_start"], out["guerite"]["die_start"]
out["events_ratio"] = gs / rs if rs and gs else None
print(json.dumps(out))
EOF
)
[[ -n $summary ]] || die "no downtime summary"
j() { jq -r "$1" <<<"$summary"; }
fmt() { jq -r "if $1 == null then \"   -\" else ($1 | round | tostring) end" <<<"$summary"; }
ratio=$(printf '%.2f' "$(j .ratio)")
eratio=$(j '.events_ratio // "-"')
[[ $eratio == - ]] || eratio=$(printf '%.2f' "$eratio")
ok_ratio=$(j 'if .ratio <= 1.5 then 1 else 0 end')
period=$(fmt '([.restart.period, .guerite.period] | add / 2)')

# --- result ------------------------------------------------------------------------------------
engine=$(docker version --format '{{.Server.Version}}')
miss() { (($1)) || printf '   MISSES GOAL'; }
echo
echo "update check, $ncontainers containers over $nrefs references, nothing new (docker $engine, API $api)"
printf '  registry  %s manifest HEAD, %s manifest GET, %s blob GET%s   (goal: %s HEAD, 0 GET)%s\n' \
  "$m_head" "$m_get" "$b_get" "$( ((r_other == 0)) || printf ', %s other' "$r_other")" "$nrefs" \
  "$(miss $((ok_head && ok_get)))"
((ok_head && ok_get)) || head -n 20 "$tmp/reglines" | sed 's/^/            /'
printf '  engine    %s pulls   (goal: 0)%s\n' "$pulls" "$(miss "$ok_pull")"
printf '  report    %s of %s items up_to_date   (goal: %s)%s   run took %s ms\n' \
  "$uptodate" "$nitems" "$ncontainers" "$(miss "$ok_report")" "$check_ms"
[[ -z $others ]] || printf '            %s\n' "$others"
echo "swap downtime, container that stops promptly, probe every ~${period// /} ms, $swap_runs runs each (load average $(cut -d' ' -f1 /proc/loadavg) on $(nproc) CPUs)"
echo "  probe: HTTP GET of busybox httpd through the published port 127.0.0.1:$port (docker-proxy);"
echo "         downtime = longest interval between two complete answers"
printf '  docker restart  median %s ms   (runs: %s)\n' "$(fmt .restart.downtime)" "$(j .restart.runs)"
printf '  guerite swap    median %s ms   ratio %s (goal ≤ 1.5)%s   (runs: %s)\n' \
  "$(fmt .guerite.downtime)" "$ratio" "$(miss "$ok_ratio")" "$(j .guerite.runs)"
printf '  engine events, die (old) → start (new): restart median %s ms, guerite median %s ms, ratio %s\n' \
  "$(fmt .restart.die_start)" "$(fmt .guerite.die_start)" "$eratio"
if (($(j '.restart.stalled + .guerite.stalled'))); then
  echo "  * first answer > 300 ms after the start event: docker-proxy listened before the container's"
  echo "    network was up, and the host's ARP retry for its address waits 1 s (retrans_time_ms)"
fi
echo "  phases, medians in ms (engine events; answer lost/back from the probe):"
echo "                  lost→die  die→stop  stop→rename  →start  start→back"
for k in restart guerite; do
  printf '  %-14s  %8s  %8s  %11s  %6s  %10s\n' "$([[ $k == restart ]] && echo "docker restart" || echo "guerite swap")" \
    "$(fmt ".$k.lost_die")" "$(fmt ".$k.die_stop")" "$(fmt ".$k.stop_rename")" "$(fmt ".$k.to_start")" "$(fmt ".$k.start_back")"
done
