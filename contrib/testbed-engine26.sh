#!/usr/bin/env bash
# testbed-engine26.sh — run a SECOND Docker engine (Debian trixie's docker.io,
# dockerd 26.1.x, API 1.45) beside the machine's own engine, for guerite's tests.
#
# Usage:
#   contrib/testbed-engine26.sh [up]    download/unpack if needed, start (or reuse),
#                                       verify, write target/testbed/env (default)
#   contrib/testbed-engine26.sh start   like up, but skip the verification step
#   contrib/testbed-engine26.sh verify  run the verification against a running engine
#   contrib/testbed-engine26.sh status  say whether the engine runs (exit 1 if not)
#   contrib/testbed-engine26.sh stop    stop the daemons this script started
#
# Environment (all optional):
#   ENGINE26_MIRROR=URL        Debian mirror for trixie (default: the bookworm URI
#                              found in /etc/apt/sources.list*, so a proxy is reused)
#   ENGINE26_OPEN_FORWARD=1    let containers on this engine's networks talk to each
#                              other through the host firewall (see "Fragile bits")
#   GUERITE_TEST_BASE_IMAGE    base image name to build (default: the one exported in
#                              target/testbed/env, else guerite-test/busybox:base)
#
# A second run reuses everything: the unpacked root (root/.unpacked lists the
# package versions; delete root/ to take a newer trixie point release), the running
# daemons and the base image. Tests talk to it with any client that speaks API
# 1.45 (the docker 28 CLI in /usr/local/bin negotiates down; bookworm's 20.10 CLI
# would cap at 1.41), e.g. `docker -H "$GUERITE_TEST_DOCKER_HOST_NEW" ps`.
#
# Everything lives under <repo>/target/testbed/engine26/:
#   apt/          private apt configuration + lists + downloaded .debs (the system's
#                 apt sources, lists and caches are never changed)
#   root/         the unpacked trixie packages (dpkg-deb -x, nothing installed)
#   containerd/   our own containerd: config, socket, root, state, log
#   data/ exec/   dockerd --data-root / --exec-root
#   docker.sock   the engine's API socket -> GUERITE_TEST_DOCKER_HOST_NEW
#   dockerd.pid containerd.pid   the only pids `stop` ever signals
#
# What runs, and why (checked on bookworm, glibc 2.36):
#   dockerd, docker-proxy, docker-init  trixie docker.io 26.1.5+dfsg1 (dockerd links
#                                       libsystemd/libgcrypt/liblzma/libzstd/liblz4/
#                                       libcap: bookworm's versions satisfy it).
#   containerd + shims                  trixie containerd 1.7.24 (needs only libc 2.34).
#                                       The engine gets its own containerd rather than
#                                       the bookworm 1.6.20, so the pair is what a
#                                       trixie host runs, and it shares no socket/state
#                                       with the 20.10 engine's containerd.
#   runc                                bookworm's runc 1.1.5 from /usr/sbin: trixie's
#                                       runc 1.1.15 needs GLIBC_2.38 and cannot run here.
#                                       containerd 1.7 / dockerd 26 accept runc 1.1.x.
#   docker (client)                     trixie docker-cli 26.1.5, used only by this
#                                       script (so `version` shows API 1.45 without
#                                       depending on whatever client is on PATH).
#
# Live restore: with address pools set and live restore off, a dockerd that restarts over a
# data root that already has its default bridge network DELETES the host's docker0 (moby's
# removeDefaultBridgeInterface), e.g. after a kill or a reboot with target/ kept.
#
# Networking: --bridge gbr26 (a bridge this script creates) --iptables=false
# --ip6tables=false --ip-forward=false. Not --bridge none: a dockerd started with the
# default bridge disabled DELETES the host's docker0 (moby's removeDefaultBridgeInterface),
# which breaks every default-network container of the 20.10 engine beside it. This
# engine never writes iptables rules and never flips sysctls; user-defined bridge networks still work (containers get addresses on a
# br-* interface, embedded DNS resolves container names). Address pools come from
# 172.28.0.0/14 cut in /24s so many test networks fit. Loopback registries
# (127.0.0.0/8) are insecure by default in dockerd: no --insecure-registry needed.
#
# Fragile bits:
#   * the trixie suite moves (point releases): the script takes whatever trixie's
#     docker.io is today and only insists on 26.1.x; containerd likewise.
#   * the host's FORWARD policy is DROP (set by the 20.10 engine) and
#     net.bridge.bridge-nf-call-iptables=1, so packets between two containers on one
#     of THIS engine's networks are dropped by the host firewall (verified: the
#     FORWARD policy counter rises). Creating networks, attaching containers,
#     addresses and name resolution work. ENGINE26_OPEN_FORWARD=1 adds an ACCEPT
#     chain for this engine's pool (see fw_open); `stop` removes it.
#   * unix socket paths are limited to 108 bytes: a very deep checkout path breaks
#     containerd.sock / docker.sock.
#   * state lives in target/: `cargo clean` while the engine runs pulls its data
#     out from under it; run `stop` first. After a crash (kill -9) the next `up`
#     recovers (containerd reattaches to the shims, dockerd kills the containers).
#   * cgroup v1 host (as here): dockerd 26 still supports it; containers go under
#     the /guerite-engine26 cgroup, apart from the 20.10 engine's /docker.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd)
TESTBED=$REPO/target/testbed
BASE=$TESTBED/engine26
APTDIR=$BASE/apt
ROOT=$BASE/root
CTD=$BASE/containerd
DATA=$BASE/data
EXEC=$BASE/exec
SOCK=$BASE/docker.sock
DOCKERD_PIDFILE=$BASE/dockerd.pid
CTD_PIDFILE=$BASE/containerd.pid
DOCKERD_LOG=$BASE/dockerd.log
CTD_LOG=$CTD/containerd.log
ENVFILE=$TESTBED/env
# The base image the tests use (busybox-static in FROM scratch): the same name the
# rest of the testbed exports as GUERITE_TEST_BASE_IMAGE (environment first, then
# target/testbed/env), so a test can use one name on both engines.
base_image_name() {
  local v=${GUERITE_TEST_BASE_IMAGE:-}
  if [[ -z $v && -f $ENVFILE ]]; then
    v=$(sed -n 's/^export GUERITE_TEST_BASE_IMAGE=//p' "$ENVFILE" | tail -n 1 | tr -d "\"'")
  fi
  printf '%s\n' "${v:-guerite-test/busybox:base}"
}
BASE_IMAGE=$(base_image_name)
# Address pool for this engine's user networks (/24 each: many test networks fit).
POOL=172.28.0.0/14
FW_CHAIN=GUERITE-ENGINE26
# Packages taken from trixie (runc is deliberately absent, see header).
TRIXIE_PKGS=(docker.io containerd tini docker-cli)
# The 20.10 engine's pid file: only used to refuse ever signalling that pid.
SYSTEM_DOCKERD_PIDFILE=/tmp/gb/dockerd.pid

DOCKERD=$ROOT/usr/sbin/dockerd
CONTAINERD=$ROOT/usr/bin/containerd
DOCKER=$ROOT/usr/bin/docker
CTR=$ROOT/usr/bin/ctr
# Our unpacked bin dirs first (containerd finds its shims, dockerd finds
# docker-proxy/docker-init there), then the system for runc, iptables, mount, ...
ENGINE_PATH=$ROOT/usr/bin:$ROOT/usr/sbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[engine26] %s\n' "$*" >&2; }
die() { printf '[engine26] ERROR: %s\n' "$*" >&2; exit 1; }

# The script's own client: isolated config dir so no credential helper or context
# from ~/.docker interferes; legacy builder because trixie's docker-cli has no buildx.
dk() { DOCKER_CONFIG=$BASE/client-config DOCKER_BUILDKIT=0 "$DOCKER" -H "unix://$SOCK" "$@"; }

# ---------------------------------------------------------------------------
# pids: a recorded pid counts as ours only if it is alive AND runs our binary,
# so a recycled pid (or the 20.10 engine) is never signalled.
# ---------------------------------------------------------------------------
pid_of() { # pidfile expected-exe -> prints pid if alive and running that exe
  local f=$1 exe=$2 pid
  [[ -s $f ]] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [[ -n $pid ]] || return 1
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == "$exe" ]] || return 1
  if [[ -s $SYSTEM_DOCKERD_PIDFILE && "$(tr -dc '0-9' <"$SYSTEM_DOCKERD_PIDFILE")" == "$pid" ]]; then
    return 1
  fi
  printf '%s\n' "$pid"
}

engine_answers() { [[ -S $SOCK ]] && dk version --format '{{.Server.APIVersion}}' >/dev/null 2>&1; }
containerd_answers() { [[ -S $CTD/containerd.sock ]] && "$CTR" --address "$CTD/containerd.sock" version >/dev/null 2>&1; }

# ---------------------------------------------------------------------------
# 1. obtain trixie's packages with a private apt configuration
# ---------------------------------------------------------------------------
# The Debian mirror the system already uses (it may be a proxy): first URI of an
# entry for suite "bookworm" in /etc/apt/sources.list{,.d/*.list,.d/*.sources}.
find_mirror() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    uri=$(awk 'BEGIN{RS="";FS="\n"}
      { u=""; s=""
        for (i=1;i<=NF;i++) { if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/,"",$i); split($i,a,/[ \t]+/); u=a[1] }
                              if ($i ~ /^Suites:/) s=" " $i " " }
        if (u != "" && s ~ / bookworm /) { print u; exit } }' "$f")
    [[ -n $uri ]] && break
  done
  if [[ -z $uri ]]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -f $f ]] || continue
      uri=$(sed -E 's/\[[^]]*\]//' "$f" | awk '$1=="deb" && $3=="bookworm" {print $2; exit}')
      [[ -n $uri ]] && break
    done
  fi
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

APT_OPTS=()
setup_private_apt() {
  local mirror
  mirror=${ENGINE26_MIRROR:-$(find_mirror)}
  mkdir -p "$APTDIR"/{lists/partial,cache/archives/partial,sources.list.d,preferences.d,debs}
  : >"$APTDIR/status"
  # target=Packages: only the package index (no Translations / DEP-11 downloads).
  # The trixie signing keys ship in bookworm's debian-archive-keyring (2023.3+deb12u*).
  local want="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg target=Packages] ${mirror%/} trixie main"
  if [[ "$(cat "$APTDIR/sources.list" 2>/dev/null)" != "$want" ]]; then
    printf '%s\n' "$want" >"$APTDIR/sources.list"
    rm -f "$APTDIR"/lists/*_Packages* "$APTDIR"/lists/*Release*
  fi
  APT_OPTS=(
    -o "Dir::Etc::SourceList=$APTDIR/sources.list"
    -o "Dir::Etc::SourceParts=$APTDIR/sources.list.d"
    -o "Dir::Etc::Preferences=$APTDIR/preferences"
    -o "Dir::Etc::PreferencesParts=$APTDIR/preferences.d"
    -o "Dir::State::Lists=$APTDIR/lists"
    -o "Dir::State::status=$APTDIR/status"
    -o "Dir::State::extended_states=$APTDIR/extended_states"
    -o "Dir::Cache=$APTDIR/cache"
    -o "APT::Sandbox::User=root"
    -o "Acquire::Languages=none"
    -q
  )
}

private_apt_update() {
  log "apt: updating private trixie index ($(awk '{print $4}' "$APTDIR/sources.list"))"
  apt-get "${APT_OPTS[@]}" update >"$APTDIR/update.log" 2>&1 ||
    { cat "$APTDIR/update.log" >&2; die "private apt-get update failed"; }
}

private_apt_download() {
  local p specs=()
  for p in "${TRIXIE_PKGS[@]}"; do specs+=("$p/trixie"); done
  rm -f "$APTDIR"/debs/*.deb
  (cd "$APTDIR/debs" && apt-get "${APT_OPTS[@]}" download "${specs[@]}") >"$APTDIR/download.log" 2>&1
}

# Fail early and clearly if a binary cannot run on this host's libraries.
check_libs() {
  local b out
  for b in "$@"; do
    out=$(ldd "$b" 2>&1 || true)
    if grep -qE 'not found|version .* not found' <<<"$out"; then
      printf '%s\n' "$out" >&2
      die "$b needs libraries this host lacks"
    fi
  done
}

ensure_unpacked() {
  local stamp=$ROOT/.unpacked
  if [[ -f $stamp && -x $DOCKERD && -x $CONTAINERD && -x $DOCKER ]]; then
    return 0
  fi
  command -v dpkg-deb >/dev/null || die "dpkg-deb missing"
  setup_private_apt
  [[ -n "$(ls "$APTDIR"/lists/*_Packages* 2>/dev/null)" ]] || private_apt_update
  if ! private_apt_download; then
    # An old index can name a .deb the mirror has dropped after a point release.
    private_apt_update
    private_apt_download || { cat "$APTDIR/download.log" >&2; die "apt-get download failed"; }
  fi
  log "apt: downloaded $(cd "$APTDIR/debs" && echo *.deb)"
  rm -rf "$ROOT.tmp"
  mkdir -p "$ROOT.tmp"
  local deb
  for deb in "$APTDIR"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT.tmp"; done
  # the stamp doubles as the record of what exactly was unpacked
  # shellcheck disable=SC2016 # ${Package} is dpkg-deb's format syntax, not bash
  for deb in "$APTDIR"/debs/*.deb; do dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb"; done >"$ROOT.tmp/.unpacked"
  rm -rf "$ROOT"
  mv "$ROOT.tmp" "$ROOT"
  rm -f "$APTDIR"/debs/*.deb # unpacked; the stamp stops re-downloads
}

check_binaries() {
  check_libs "$DOCKERD" "$ROOT/usr/sbin/docker-proxy" "$CONTAINERD" \
    "$ROOT/usr/bin/containerd-shim-runc-v2" "$DOCKER" "$CTR"
  local v
  v=$("$DOCKERD" --version)
  [[ $v == *"version 26.1."* ]] || die "unexpected dockerd: $v (want 26.1.x)"
  # runc comes from bookworm (see header); install it if someone removed it.
  if ! PATH=$ENGINE_PATH command -v runc >/dev/null; then
    log "installing bookworm runc"
    apt_install runc
  fi
  PATH=$ENGINE_PATH runc --version >/dev/null || die "runc does not run"
}

# ---------------------------------------------------------------------------
# 2. start (or reuse) containerd + dockerd
# ---------------------------------------------------------------------------
# Before a fresh start: after a reboot (or a pid reuse) a leftover pid file would
# make dockerd refuse to start. Everything else (containerd state, exec-root,
# mounts of containers whose shims outlived a crash) is deliberately left alone:
# containerd reattaches to surviving shims and dockerd then stops/cleans its
# containers, which is the normal crash-recovery path; wiping state here would
# orphan those shims instead.
cleanup_stale() {
  rm -f "$DOCKERD_PIDFILE"
}

start_containerd() {
  mkdir -p "$CTD"/{root,state,opt}
  # Own root/state/sockets; CRI plugin off (not needed, and it would want CNI).
  cat >"$CTD/config.toml" <<EOF
version = 2
root = "$CTD/root"
state = "$CTD/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CTD/containerd.sock"

[ttrpc]
  address = "$CTD/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTD/opt"
EOF
  log "starting containerd ($("$CONTAINERD" --version | awk '{print $3}'))"
  # setsid: own session, so the daemon outlives this script and its caller's job.
  # (bash's background child is no group leader, so setsid execs in place and $!
  # becomes containerd's own pid; checked through /proc/PID/exe once it answers,
  # not before: right after the fork the child is still bash/setsid.)
  PATH=$ENGINE_PATH setsid "$CONTAINERD" --config "$CTD/config.toml" \
    >>"$CTD_LOG" 2>&1 </dev/null 9>&- &
  local launched=$! i
  echo "$launched" >"$CTD_PIDFILE"
  for ((i = 0; i < 120; i++)); do
    containerd_answers && break
    [[ -d /proc/$launched ]] || { tail -n 30 "$CTD_LOG" >&2; die "containerd exited"; }
    sleep 0.5
  done
  containerd_answers || { tail -n 30 "$CTD_LOG" >&2; die "containerd did not answer in 60 s"; }
  pid_of "$CTD_PIDFILE" "$CONTAINERD" >/dev/null ||
    die "pid $launched is not $CONTAINERD (setsid forked?); stop it by hand"
}

# The default bridge of this engine: its own interface, outside POOL and outside the 20.10
# engine's 172.17.0.0/16, so that neither engine touches the other's.
BRIDGE=gbr26
BRIDGE_CIDR=172.27.26.1/24
ensure_bridge() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || {
    ip link add name "$BRIDGE" type bridge
    ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
  }
  ip link set "$BRIDGE" up
}

start_dockerd() {
  ensure_bridge
  mkdir -p "$DATA" "$EXEC"
  # Own (empty) daemon.json so a future /etc/docker/daemon.json cannot leak in.
  [[ -f $BASE/daemon.json ]] || echo '{}' >"$BASE/daemon.json"
  log "starting dockerd ($("$DOCKERD" --version))"
  PATH=$ENGINE_PATH setsid "$DOCKERD" \
    --host "unix://$SOCK" \
    --config-file "$BASE/daemon.json" \
    --data-root "$DATA" \
    --exec-root "$EXEC" \
    --pidfile "$DOCKERD_PIDFILE" \
    --containerd "$CTD/containerd.sock" \
    --storage-driver overlay2 \
    --bridge "$BRIDGE" \
    --iptables=false \
    --ip6tables=false \
    --ip-forward=false \
    --ip-masq=false \
    --default-address-pool "base=$POOL,size=24" \
    --live-restore \
    --cgroup-parent /guerite-engine26 \
    --userland-proxy-path "$ROOT/usr/sbin/docker-proxy" \
    --init-path "$ROOT/usr/bin/docker-init" \
    --shutdown-timeout 5 \
    >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
  local launched=$! i
  for ((i = 0; i < 120; i++)); do
    engine_answers && break
    [[ -d /proc/$launched ]] || { tail -n 30 "$DOCKERD_LOG" >&2; die "dockerd exited"; }
    sleep 0.5
  done
  engine_answers || { tail -n 30 "$DOCKERD_LOG" >&2; die "dockerd did not answer in 60 s"; }
}

wait_engine() { # an engine of ours is alive but not yet answering: bounded wait
  local i
  for ((i = 0; i < 120; i++)); do engine_answers && return 0; sleep 0.5; done
  return 1
}

ensure_running() {
  local dpid cpid
  dpid=$(pid_of "$DOCKERD_PIDFILE" "$DOCKERD" || true)
  if [[ -n $dpid ]]; then
    if wait_engine; then log "reusing running dockerd (pid $dpid)"; return 0; fi
    die "dockerd pid $dpid runs but $SOCK does not answer; run '$0 stop' first"
  fi
  cpid=$(pid_of "$CTD_PIDFILE" "$CONTAINERD" || true)
  if [[ -n $cpid ]] && ! containerd_answers; then
    log "containerd pid $cpid does not answer; restarting it"
    stop_pid "$CTD_PIDFILE" "$CONTAINERD" containerd
    cpid=""
  fi
  if [[ -z $cpid ]]; then
    start_containerd
  else
    log "reusing running containerd (pid $cpid)"
  fi
  cleanup_stale
  start_dockerd
}

# Opt-in (ENGINE26_OPEN_FORWARD=1): the host has net.bridge.bridge-nf-call-iptables=1
# and FORWARD policy DROP (both from the 20.10 engine), so even frames between two
# containers on ONE bridge of this engine are dropped. Neither can be changed
# without touching the 20.10 engine's setup; instead a chain of our own accepts
# traffic whose source AND destination are in this engine's address pool.
# `stop` removes it again.
fw_open() {
  log "firewall: accepting $POOL <-> $POOL in FORWARD via chain $FW_CHAIN"
  iptables -w -N "$FW_CHAIN" 2>/dev/null || iptables -w -F "$FW_CHAIN"
  iptables -w -A "$FW_CHAIN" -s "$POOL" -d "$POOL" -j ACCEPT
  iptables -w -C FORWARD -j "$FW_CHAIN" 2>/dev/null || iptables -w -I FORWARD -j "$FW_CHAIN"
}
fw_close() {
  command -v iptables >/dev/null || return 0
  iptables -w -n -L "$FW_CHAIN" >/dev/null 2>&1 || return 0
  log "firewall: removing chain $FW_CHAIN"
  while iptables -w -D FORWARD -j "$FW_CHAIN" 2>/dev/null; do :; done
  iptables -w -F "$FW_CHAIN"
  iptables -w -X "$FW_CHAIN"
}

# ---------------------------------------------------------------------------
# 3. verification: image build, run, user network, push/pull via loopback registry
# ---------------------------------------------------------------------------
ensure_deb() { # command package
  command -v "$1" >/dev/null && return 0
  log "installing $2 (bookworm)"
  apt_install "$2"
}

# system apt (bookworm) for the few host tools: retry once after an update, as a
# fresh machine may have no package lists yet
apt_install() {
  apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}

free_port() {
  python3 - <<'EOF' 2>/dev/null && return 0
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
EOF
  local p
  for p in $(seq 45000 45100); do
    ss -ltnH "sport = :$p" | grep -q . || { echo "$p"; return 0; }
  done
  die "no free loopback port"
}

REG_PID=""
PROBE=""
verify_cleanup() {
  if [[ -n $PROBE ]]; then
    dk rm -f "$PROBE-a" >/dev/null 2>&1 || true
    dk network rm "$PROBE" >/dev/null 2>&1 || true
    local ref
    for ref in $(dk image ls --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -E "/$PROBE:" || true); do
      dk rmi "$ref" >/dev/null 2>&1 || true
    done
  fi
  if [[ -n $REG_PID ]]; then
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
    REG_PID=""
  fi
  rm -rf "$BASE/registry-probe"
}

verify() {
  local api
  api=$(dk version --format '{{.Server.Version}} API {{.Server.APIVersion}}')
  log "engine: $api"
  [[ $api == *"API 1.45" ]] || die "expected API 1.45, got: $api"

  PROBE=guerite-engine26-probe-$$
  trap verify_cleanup EXIT

  # base image: FROM scratch + static busybox (built once, kept)
  if ! dk image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    ensure_deb busybox busybox-static
    # FROM scratch has no libc: the busybox must be the static one
    [[ -x /bin/busybox && "$(LC_ALL=C ldd /bin/busybox 2>&1 || true)" == *"not a dynamic"* ]] ||
      die "/bin/busybox is not the static one (install busybox-static)"
    local ctx=$BASE/image-context
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp /bin/busybox "$ctx/busybox"
    printf '%s\n' 'FROM scratch' 'COPY busybox /bin/busybox' \
      'RUN ["/bin/busybox", "--install", "-s", "/bin"]' 'CMD ["sleep", "3600"]' >"$ctx/Dockerfile"
    log "building $BASE_IMAGE"
    dk build -q -t "$BASE_IMAGE" "$ctx" >/dev/null 2>"$BASE/build.log" || { cat "$BASE/build.log" >&2; die "build failed"; }
    rm -rf "$ctx"
  fi

  local out
  out=$(dk run --rm "$BASE_IMAGE" echo run-ok)
  [[ $out == run-ok ]] || die "docker run: $out"
  log "run: ok"

  # user-defined bridge network despite --bridge none / --iptables=false
  dk network create --driver bridge "$PROBE" >/dev/null
  dk run -d --name "$PROBE-a" --network "$PROBE" "$BASE_IMAGE" sleep 60 >/dev/null
  local ip_a
  ip_a=$(dk inspect -f "{{(index .NetworkSettings.Networks \"$PROBE\").IPAddress}}" "$PROBE-a")
  [[ -n $ip_a ]] || die "container on user network got no address"
  out=$(dk run --rm --network "$PROBE" "$BASE_IMAGE" ip -4 -o addr show eth0)
  [[ $out == *inet* ]] || die "second container on user network has no eth0 address: $out"
  log "user network: ok ($PROBE-a has $ip_a)"
  # embedded DNS (127.0.0.11) works with --iptables=false: dockerd still sets up
  # the DNAT inside each container's own netns
  out=$(dk run --rm --network "$PROBE" "$BASE_IMAGE" nslookup "$PROBE-a" 127.0.0.11 2>&1 || true)
  [[ $out == *"$ip_a"* ]] || die "embedded DNS did not resolve $PROBE-a to $ip_a: $out"
  log "user network: embedded DNS ok ($PROBE-a -> $ip_a)"
  # Traffic between containers crosses the host's FORWARD chain (br_netfilter);
  # informational unless ENGINE26_OPEN_FORWARD=1 promised it would pass.
  if dk run --rm --network "$PROBE" "$BASE_IMAGE" ping -c1 -W2 "$ip_a" >/dev/null 2>&1; then
    log "user network: container-to-container traffic ok"
  elif [[ ${ENGINE26_OPEN_FORWARD:-0} == 1 ]]; then
    die "container-to-container ping fails although $FW_CHAIN is in place"
  else
    log "user network: container-to-container traffic DROPPED by the host FORWARD policy" \
      "(expected; ENGINE26_OPEN_FORWARD=1 opens it)"
  fi
  dk rm -f "$PROBE-a" >/dev/null
  dk network rm "$PROBE" >/dev/null

  # throwaway loopback registry: push, drop the local tag, pull back, run
  ensure_deb docker-registry docker-registry
  local port reg=$BASE/registry-probe
  port=$(free_port)
  mkdir -p "$reg/storage"
  cat >"$reg/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $reg/storage
http:
  addr: 127.0.0.1:$port
EOF
  docker-registry serve "$reg/config.yml" >"$reg/registry.log" 2>&1 </dev/null 9>&- &
  REG_PID=$!
  local i
  for ((i = 0; i < 40; i++)); do
    curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
    sleep 0.25
  done
  curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null || { cat "$reg/registry.log" >&2; die "registry did not start"; }
  local ref=127.0.0.1:$port/$PROBE:1
  dk tag "$BASE_IMAGE" "$ref"
  dk push -q "$ref" >/dev/null 2>"$reg/push.log" || { cat "$reg/push.log" >&2; die "push to $ref failed"; }
  dk rmi "$ref" >/dev/null
  dk pull -q "$ref" >/dev/null 2>"$reg/pull.log" || { cat "$reg/pull.log" >&2; die "pull of $ref failed"; }
  out=$(dk run --rm "$ref" echo pulled-ok)
  [[ $out == pulled-ok ]] || die "run of pulled image: $out"
  dk rmi "$ref" >/dev/null
  log "registry push/pull via $ref (insecure loopback, no flags): ok"

  verify_cleanup
  trap - EXIT
}

# ---------------------------------------------------------------------------
# 4. env file for the tests
# ---------------------------------------------------------------------------
write_env() {
  mkdir -p "$TESTBED"
  local line="export GUERITE_TEST_DOCKER_HOST_NEW=unix://$SOCK" tmp
  tmp=$(mktemp "$TESTBED/.env.XXXXXX")
  { [[ -f $ENVFILE ]] && grep -v '^export GUERITE_TEST_DOCKER_HOST_NEW=' "$ENVFILE" || true; } >"$tmp"
  printf '%s\n' "$line" >>"$tmp"
  mv "$tmp" "$ENVFILE"
  log "env: $line (in $ENVFILE)"
}

# ---------------------------------------------------------------------------
# 5. stop: only the recorded pids, only if they still run our binaries
# ---------------------------------------------------------------------------
stop_pid() { # pidfile exe name
  local pid i
  pid=$(pid_of "$1" "$2" || true)
  if [[ -z $pid ]]; then rm -f "$1"; return 0; fi
  log "stopping $3 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do [[ -d /proc/$pid ]] || break; sleep 0.5; done
  if [[ -d /proc/$pid ]]; then
    log "$3 still running after 30 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$1"
}

stop_all() {
  # dockerd first: it stops its containers (--shutdown-timeout 5), then the shims
  # exit and containerd can go.
  stop_pid "$DOCKERD_PIDFILE" "$DOCKERD" dockerd
  stop_pid "$CTD_PIDFILE" "$CONTAINERD" containerd
  fw_close
  unmount_leftovers
}

# dockerd bind-mounts --data-root onto itself (to make it a shared mount) and
# undoes that on a clean shutdown only if it made it in this run; after a crash
# the mount (and possibly container mounts) stays, and then `rm -rf target`
# (cargo clean) fails with EBUSY. With both daemons gone, nothing of ours still
# needs a mount under $BASE: detach them, deepest first. Touches nothing else.
unmount_leftovers() {
  local m
  while read -r m; do
    log "unmounting leftover $m"
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v b="$BASE/" '(index($5, b) == 1 || $5 == substr(b, 1, length(b) - 1)) {print $5}' /proc/self/mountinfo | sort -r)
}

status() {
  local dpid cpid
  dpid=$(pid_of "$DOCKERD_PIDFILE" "$DOCKERD" || true)
  cpid=$(pid_of "$CTD_PIDFILE" "$CONTAINERD" || true)
  echo "dockerd:    ${dpid:-not running}"
  echo "containerd: ${cpid:-not running}"
  if [[ -n $dpid ]] && engine_answers; then
    echo "engine:     $(dk version --format '{{.Server.Version}} (API {{.Server.APIVersion}})') on unix://$SOCK"
    return 0
  fi
  return 1
}

main() {
  local cmd=${1:-up}
  [[ $(id -u) == 0 ]] || die "must run as root (dockerd needs it)"
  mkdir -p "$BASE"
  # One invocation at a time (two `up`s racing would start two daemons). The
  # daemons are started with fd 9 closed so they do not keep holding the lock.
  exec 9>"$BASE/.lock"
  flock -w 300 9 || die "another $0 is running"
  case $cmd in
    up | start)
      ensure_unpacked
      check_binaries
      ensure_running
      if [[ ${ENGINE26_OPEN_FORWARD:-0} == 1 ]]; then fw_open; fi
      [[ $cmd == start ]] || verify
      write_env
      ;;
    verify) engine_answers || die "engine not running"; verify ;;
    status) status ;;
    stop) stop_all ;;
    *) die "usage: $0 [up|start|verify|status|stop]" ;;
  esac
}

main "$@"
