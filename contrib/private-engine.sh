#!/usr/bin/env bash
# private-engine.sh — a throwaway Docker engine that a test may kill, for guerite's
# engine-death tests. Everything it runs and keeps is its own: containerd (config, root,
# state, sockets), dockerd (data root, exec root, pid file, socket, daemon.json) and a
# bridge of its own. It never touches the shared engines (/var/run/docker.sock and
# target/testbed/engine26).
#
# Usage (as root):
#   contrib/private-engine.sh start DIR [20|26]  start containerd + dockerd under DIR;
#                                                prints the DOCKER_HOST (unix://DIR/docker.sock)
#   contrib/private-engine.sh kill DIR           SIGKILL dockerd (only it: its containerd and
#                                                the containers' shims stay, as when the
#                                                engine of a host with a containerd service dies)
#   contrib/private-engine.sh restart DIR        start dockerd again over the same state (and
#                                                containerd, should it be gone)
#   contrib/private-engine.sh stop DIR           SIGTERM dockerd, then containerd (what is left of
#                                                the containers' tasks is killed through
#                                                containerd first), unmount, delete the bridge,
#                                                remove DIR
#   contrib/private-engine.sh status DIR         say what runs (exit 1 unless the engine answers)
#
# Versions: 20 is the machine's own dockerd 20.10 (/usr/sbin/dockerd, API 1.41) with the
# machine's containerd 1.6 (/usr/bin/containerd); 26 is Debian trixie's dockerd 26.1 (API
# 1.45) and containerd 1.7 as contrib/testbed-engine26.sh unpacked them under
# target/testbed/engine26/root (run that script first; it is part of contrib/testbed.sh).
# runc is the machine's in both cases.
#
# Layout of DIR (keep it short: unix socket paths must stay under 108 bytes):
#   version bridge           what `start` chose (engine version, bridge name and address)
#   ctd/                     containerd: config.toml, root/, state/, containerd.sock, log
#   data/ exec/              dockerd --data-root / --exec-root
#   docker.sock daemon.json  the API socket, an empty daemon configuration
#   dockerd.pid containerd.pid dockerd.log
#
# Networking: its own bridge (ip link add gpe<8 hex of DIR> type bridge, with an address in
# an unused 10.213.N.0/24) with --iptables=false --ip6tables=false --ip-forward=false
# --ip-masq=false. Two things make a dockerd delete the host's docker0 (moby's
# removeDefaultBridgeInterface, which names docker0 whatever --bridge says), which breaks every
# default-network container of the engines beside it:
#   * --bridge none (the default bridge disabled), at every start;
#   * default address pools (--default-address-pool, or default-address-pools in daemon.json)
#     without --live-restore, at every start over a data root that has a default bridge
#     network already: every `restart` here. Seen on 20.10; 26.1 has the same code.
# So neither is ever passed: user networks, should a test make one, get Docker's default
# pools (which skip ranges that a host route covers). Every start also checks that docker0,
# if the host had it, is still there.
#
# Safety: a pid is signalled only if this script recorded it and /proc/PID/exe is the
# expected binary and its command line names DIR's own socket or configuration, so neither a
# recycled pid nor the machine's dockerd (the same binary, for version 20) is ever signalled.
# Without --live-restore, a restarted dockerd stops the containers that were running when it
# died (a container with restart policy "no" stays stopped): the state a host is in after its
# engine died and came back.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd)
ENGINE26_ROOT=$REPO/target/testbed/engine26/root
# Bridges and addresses are the host's, not DIR's: one lock for every private engine.
HOST_LOCK=/run/lock/guerite-private-engine.lock
[[ -d /run/lock ]] || HOST_LOCK=/tmp/guerite-private-engine.lock
CGROUP_PARENT=/guerite-private-engine

log() { printf '[private-engine %s] %s\n' "${DIR##*/}" "$*" >&2; }
die() { printf '[private-engine %s] ERROR: %s\n' "${DIR##*/}" "$*" >&2; exit 1; }

# --- the engine's binaries, by version ----------------------------------------------------
binaries() { # version
  case $1 in
    20)
      DOCKERD=/usr/sbin/dockerd
      CONTAINERD=/usr/bin/containerd
      CTR=/usr/bin/ctr
      ENGINE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
      EXTRA_DOCKERD=()
      ;;
    26)
      DOCKERD=$ENGINE26_ROOT/usr/sbin/dockerd
      CONTAINERD=$ENGINE26_ROOT/usr/bin/containerd
      CTR=$ENGINE26_ROOT/usr/bin/ctr
      # The unpacked bin dirs first (containerd finds its shims, dockerd docker-proxy and
      # docker-init there), then the system for runc, mount, ...
      ENGINE_PATH=$ENGINE26_ROOT/usr/bin:$ENGINE26_ROOT/usr/sbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
      EXTRA_DOCKERD=(--userland-proxy-path "$ENGINE26_ROOT/usr/sbin/docker-proxy"
        --init-path "$ENGINE26_ROOT/usr/bin/docker-init")
      ;;
    *) die "unknown engine version '$1' (20 or 26)" ;;
  esac
  local b
  for b in "$DOCKERD" "$CONTAINERD" "$CTR"; do
    [[ -x $b ]] || die "$b is missing (version $1$([[ $1 == 26 ]] && echo '; run contrib/testbed-engine26.sh first'))"
  done
  PATH=$ENGINE_PATH command -v runc >/dev/null || die "runc is missing (apt-get install runc)"
  DOCKERD=$(readlink -f "$DOCKERD")
  CONTAINERD=$(readlink -f "$CONTAINERD")
}

set_paths() {
  CTD=$DIR/ctd
  CTD_SOCK=$CTD/containerd.sock
  CTD_CONFIG=$CTD/config.toml
  CTD_LOG=$CTD/containerd.log
  CTD_PIDFILE=$DIR/containerd.pid
  DATA=$DIR/data
  EXEC=$DIR/exec
  SOCK=$DIR/docker.sock
  DOCKERD_PIDFILE=$DIR/dockerd.pid
  DOCKERD_LOG=$DIR/dockerd.log
}

# --- pids: recorded, alive, the expected binary, and serving DIR ----------------------------
# pid_of PIDFILE EXE MARK: the recorded pid if it runs EXE with MARK among its arguments.
pid_of() {
  local f=$1 exe=$2 mark=$3 pid state
  [[ -s $f ]] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [[ -n $pid && -d /proc/$pid ]] || return 1
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == "$exe" ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$mark" || return 1
  # A zombie is dead already: only its parent's wait is missing.
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)
  [[ $state != Z ]] || return 1
  printf '%s\n' "$pid"
}
dockerd_pid() { pid_of "$DOCKERD_PIDFILE" "$DOCKERD" "unix://$SOCK"; }
containerd_pid() { pid_of "$CTD_PIDFILE" "$CONTAINERD" "$CTD_CONFIG"; }

engine_answers() {
  [[ -S $SOCK ]] && [[ $(curl -s -m 5 --unix-socket "$SOCK" http://engine/_ping 2>/dev/null) == OK ]]
}
containerd_answers() {
  [[ -S $CTD_SOCK ]] && "$CTR" --address "$CTD_SOCK" version >/dev/null 2>&1
}

# gone PID SECONDS: waits until PID has exited (or is a zombie).
gone() {
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    [[ -d /proc/$pid ]] || return 0
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z) == Z ]] && return 0
    sleep 0.1
  done
  return 1
}

# --- the bridge -----------------------------------------------------------------------------
ip4_int() { # a.b.c.d -> integer
  local IFS=. a b c d
  read -r a b c d <<<"$1"
  echo $(((a << 24) | (b << 16) | (c << 8) | d))
}
# overlaps CIDR CIDR: whether the two IPv4 prefixes share an address.
overlaps() {
  local n1=${1%/*} l1=${1#*/} n2=${2%/*} l2=${2#*/} l m
  [[ $1 == */* ]] || l1=32
  [[ $2 == */* ]] || l2=32
  l=$((l1 < l2 ? l1 : l2))
  ((l == 0)) && return 0
  m=$(((0xffffffff << (32 - l)) & 0xffffffff))
  (($(($(ip4_int "$n1") & m)) == $(($(ip4_int "$n2") & m))))
}
# A /24 that no address and no route of the host touches (the default route aside).
prefix_free() {
  local p=$1 dst
  while read -r dst; do
    [[ -z $dst || $dst == default ]] && continue
    overlaps "$p" "$dst" && return 1
  done < <({ ip -4 -o addr show | awk '{print $4}'; ip -4 route show table all | awk '{print ($1 ~ /^(local|broadcast|unicast|multicast|anycast|unreachable|blackhole|prohibit|throw|nat)$/) ? $2 : $1}'; } | sort -u)
  return 0
}

make_bridge() {
  BRIDGE=gpe$(printf '%s' "$DIR" | sha256sum | cut -c1-8)
  exec 8>"$HOST_LOCK"
  flock -w 60 8 || die "$HOST_LOCK is held by another private engine for 60 s"
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    die "a bridge $BRIDGE exists already: another private engine on $DIR? run '$0 stop $DIR'"
  fi
  local n
  for ((n = 0; n < 256; n++)); do
    prefix_free "10.213.$n.0/24" && break
  done
  ((n < 256)) || die "no free 10.213.N.0/24 for the bridge"
  ip link add name "$BRIDGE" type bridge
  ip addr add "10.213.$n.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  printf 'BRIDGE=%s\nBRIDGE_CIDR=10.213.%s.1/24\n' "$BRIDGE" "$n" >"$DIR/bridge"
  flock -u 8
  exec 8>&-
  log "bridge $BRIDGE 10.213.$n.1/24"
}

delete_bridge() {
  [[ -f $DIR/bridge ]] || return 0
  local b
  b=$(sed -n 's/^BRIDGE=//p' "$DIR/bridge")
  # Only a bridge of this script's naming, and the one recorded for this DIR.
  if [[ $b == gpe* ]] && ip link show "$b" >/dev/null 2>&1; then
    log "deleting bridge $b"
    ip link delete "$b" type bridge
  fi
  rm -f "$DIR/bridge"
}

# --- the daemons ----------------------------------------------------------------------------
start_containerd() {
  mkdir -p "$CTD"/{root,state,opt}
  cat >"$CTD_CONFIG" <<EOF
version = 2
root = "$CTD/root"
state = "$CTD/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CTD_SOCK"

[ttrpc]
  address = "$CTD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTD/opt"
EOF
  # setsid execs in place (a background child of bash is no group leader), so $! is
  # containerd's own pid; it is checked through /proc/PID/exe once containerd answers.
  PATH=$ENGINE_PATH setsid "$CONTAINERD" --config "$CTD_CONFIG" \
    >>"$CTD_LOG" 2>&1 </dev/null 8>&- 9>&- &
  local launched=$! i
  echo "$launched" >"$CTD_PIDFILE"
  for ((i = 0; i < 120; i++)); do
    containerd_answers && break
    [[ -d /proc/$launched ]] || { tail -n 30 "$CTD_LOG" >&2; die "containerd exited"; }
    sleep 0.25
  done
  containerd_answers || { tail -n 30 "$CTD_LOG" >&2; die "containerd did not answer in 30 s"; }
  containerd_pid >/dev/null || die "pid $launched is not $CONTAINERD; stop it by hand"
  log "containerd $("$CONTAINERD" --version | awk '{print $3}') (pid $launched)"
}

start_dockerd() {
  # shellcheck source=/dev/null
  . "$DIR/bridge"
  ip link show "$BRIDGE" >/dev/null 2>&1 || die "its bridge $BRIDGE is gone"
  mkdir -p "$DATA" "$EXEC"
  [[ -f $DIR/daemon.json ]] || echo '{}' >"$DIR/daemon.json"
  # A pid file left by a killed dockerd: the pid may have been reused since.
  rm -f "$DOCKERD_PIDFILE"
  local docker0=0
  ip link show docker0 >/dev/null 2>&1 && docker0=1
  PATH=$ENGINE_PATH setsid "$DOCKERD" \
    --host "unix://$SOCK" \
    --config-file "$DIR/daemon.json" \
    --data-root "$DATA" \
    --exec-root "$EXEC" \
    --pidfile "$DOCKERD_PIDFILE" \
    --containerd "$CTD_SOCK" \
    --storage-driver overlay2 \
    --bridge "$BRIDGE" \
    --iptables=false \
    --ip6tables=false \
    --ip-forward=false \
    --ip-masq=false \
    --cgroup-parent "$CGROUP_PARENT" \
    --shutdown-timeout 5 \
    "${EXTRA_DOCKERD[@]}" \
    >>"$DOCKERD_LOG" 2>&1 </dev/null 8>&- 9>&- &
  local launched=$! i
  for ((i = 0; i < 240; i++)); do
    engine_answers && break
    [[ -d /proc/$launched ]] || { tail -n 30 "$DOCKERD_LOG" >&2; die "dockerd exited"; }
    sleep 0.25
  done
  engine_answers || { tail -n 30 "$DOCKERD_LOG" >&2; die "dockerd did not answer in 60 s"; }
  local pid
  pid=$(dockerd_pid) || die "dockerd answers but $DOCKERD_PIDFILE does not name it"
  if ((docker0)) && ! ip link show docker0 >/dev/null 2>&1; then
    die "the host's docker0 is gone since this dockerd started: the engines beside it lost their default bridge (see the header)"
  fi
  log "dockerd $("$DOCKERD" --version | sed 's/,.*//; s/.*version //') (pid $pid) on unix://$SOCK"
}

# stop_pid NAME PID: SIGTERM, bounded wait, then SIGKILL.
stop_pid() {
  log "stopping $1 (pid $2)"
  kill -TERM "$2" 2>/dev/null || true
  gone "$2" 30 && return 0
  log "$1 still runs after 30 s: SIGKILL"
  kill -KILL "$2" 2>/dev/null || true
  gone "$2" 10 || log "pid $2 does not go away"
}

# What dockerd left running (it was killed and not restarted): containerd kills and deletes
# the tasks, and their shims exit with them.
kill_tasks() {
  local ns id c=(--address "$CTD_SOCK")
  for ns in $("$CTR" "${c[@]}" namespaces ls -q 2>/dev/null); do
    for id in $("$CTR" "${c[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
      log "killing the task $ns/${id:0:12} that dockerd left"
      "$CTR" "${c[@]}" -n "$ns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $("$CTR" "${c[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        "$CTR" "${c[@]}" -n "$ns" tasks delete "$id" >/dev/null 2>&1 && break
        sleep 0.2
      done
    done
  done
}

# Mounts the daemons made under DIR and left (after a kill, or a dockerd that re-mounted its
# data root onto itself): deepest first.
unmount_leftovers() {
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v b="$DIR/" '(index($5, b) == 1 || $5 == substr(b, 1, length(b) - 1)) {print $5}' /proc/self/mountinfo | sort -r)
}

# --- commands -------------------------------------------------------------------------------
cmd_start() {
  local version=${1:-20}
  [[ ! -f $DIR/version || $(<"$DIR/version") == "$version" ]] || die "$DIR holds a version $(<"$DIR/version") engine"
  echo "$version" >"$DIR/version"
  binaries "$version"
  if dockerd_pid >/dev/null 2>&1 || containerd_pid >/dev/null 2>&1; then
    die "a private engine runs on $DIR already"
  fi
  (( ${#CTD_SOCK} + 6 < 108 )) || die "$CTD_SOCK.ttrpc is too long for a unix socket: use a shorter DIR"
  [[ -f $DIR/bridge ]] || make_bridge
  start_containerd
  start_dockerd
  echo "unix://$SOCK"
}

cmd_kill() {
  local pid
  pid=$(dockerd_pid) || die "no dockerd of $DIR runs"
  log "SIGKILL dockerd (pid $pid); containerd stays"
  kill -KILL "$pid"
  gone "$pid" 10 || die "dockerd pid $pid is still there 10 s after SIGKILL"
}

cmd_restart() {
  ! dockerd_pid >/dev/null || die "dockerd of $DIR still runs"
  if ! containerd_pid >/dev/null; then
    log "its containerd is gone too: starting it"
    start_containerd
  fi
  start_dockerd
  echo "unix://$SOCK"
}

cmd_stop() {
  local pid
  if pid=$(dockerd_pid); then stop_pid dockerd "$pid"; fi
  if pid=$(containerd_pid); then
    containerd_answers && kill_tasks
    stop_pid containerd "$pid"
  fi
  rm -f "$DOCKERD_PIDFILE" "$CTD_PIDFILE"
  unmount_leftovers
  delete_bridge
  if awk -v b="$DIR/" 'index($5, b) == 1 {found = 1} END {exit !found}' /proc/self/mountinfo; then
    die "mounts under $DIR remain; not removing it"
  fi
  cd /
  rm -rf "$DIR"
}

cmd_status() {
  local d c
  d=$(dockerd_pid || true)
  c=$(containerd_pid || true)
  echo "dockerd:    ${d:-not running}"
  echo "containerd: ${c:-not running}"
  [[ -n $d ]] && engine_answers
}

main() {
  [[ $# -ge 2 ]] || { echo "usage: $0 start DIR [20|26] | kill DIR | restart DIR | stop DIR | status DIR" >&2; exit 2; }
  local cmd=$1
  DIR=$2
  shift 2
  [[ $(id -u) == 0 ]] || die "must run as root (dockerd needs it)"
  case $cmd in
    start) mkdir -p "$DIR" ;;
    *) [[ -d $DIR ]] || { [[ $cmd == stop ]] && exit 0; die "$DIR does not exist"; } ;;
  esac
  DIR=$(cd -- "$DIR" && pwd -P)
  set_paths
  # One command at a time per engine; the daemons start with fd 9 closed so they do not hold it.
  exec 9>"$DIR/.lock"
  flock -w 120 9 || die "another $0 works on $DIR"
  if [[ $cmd != start ]]; then
    # Only a DIR that `start` made (it writes version first) is ever acted on, or removed.
    [[ -f $DIR/version ]] || { [[ $cmd == stop ]] && { log "no engine was started in $DIR"; exit 0; }; die "$DIR has no engine"; }
    binaries "$(<"$DIR/version")"
  fi
  case $cmd in
    start) cmd_start "$@" ;;
    kill) cmd_kill ;;
    restart) cmd_restart ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) die "unknown command $cmd" ;;
  esac
}

main "$@"
