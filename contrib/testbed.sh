#!/usr/bin/env bash
# Makes this machine ready for guerite's integration tests: a Docker engine, two registries on
# 127.0.0.1 (plain and htpasswd), a busybox base image built from local files (there is no
# internet), and target/testbed/env to source. Safe to rerun: whatever still answers is reused.
#
#   contrib/testbed.sh        set up (or check) the bed
#   contrib/testbed.sh stop   stop only the processes this script started (by recorded pid)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tb="$root/target/testbed"
mkdir -p "$tb"

auth_user=guerite
auth_password=s3cret
base_image=guerite-test/busybox:base
export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}

log() { printf 'testbed: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Prints the pid recorded in $1 if that process still runs the program $2. Checking the program
# name keeps a recycled pid from being mistaken for ours (and from being killed by `stop`).
recorded_pid() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
  echo "$pid"
}

stop_recorded() {
  local pid i
  pid=$(recorded_pid "$1" "$2") || { rm -f "$1"; return 0; }
  log "stopping $2 (pid $pid)"
  kill "$pid" 2>/dev/null || true
  # dockerd stops its containers first, which can take its full 15 s shutdown timeout.
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { log "pid $pid ignored SIGTERM, sending SIGKILL"; kill -9 "$pid"; }
  rm -f "$1"
}

if [[ ${1:-} == stop ]]; then
  stop_recorded "$tb/registry-plain.pid" docker-registry
  stop_recorded "$tb/registry-auth.pid" docker-registry
  stop_recorded "$tb/dockerd.pid" dockerd
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [stop]"

# --- packages ------------------------------------------------------------------------------
missing=()
# iproute2: contrib/private-engine.sh makes its engine's bridge with `ip`.
for p in docker.io docker-registry busybox-static socat curl apache2-utils openssl python3 iproute2; do
  # dpkg -s alone also succeeds for removed packages whose config files remain.
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  # Recommends of docker.io (needrestart, git, ...) are not needed and slow a fresh machine.
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- engine ----------------------------------------------------------------------------------
engine_answers() { timeout 10 docker version >/dev/null 2>&1; }

if engine_answers; then
  log "reusing the engine on $DOCKER_HOST"
else
  [[ $DOCKER_HOST == unix://* ]] || die "no engine answers on $DOCKER_HOST and only unix sockets can be started here"
  sock=${DOCKER_HOST#unix://}
  # A daemon we started earlier may still be booting: wait for it instead of starting a second.
  if pid=$(recorded_pid "$tb/dockerd.pid" dockerd); then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--host $DOCKER_HOST " ||
      die "the dockerd this script started (pid $pid) serves another socket; run '$0 stop' first"
  else
    args=(--host "$DOCKER_HOST" --pidfile "$tb/dockerd.pid")
    if [[ $sock != /var/run/docker.sock && $sock != /run/docker.sock ]]; then
      # A side engine, possibly next to the machine's own one: keep its state, containerd and
      # network apart so the two never share docker0, iptables chains or /var/lib/docker.
      args+=(--data-root "$tb/engine/data" --exec-root "$tb/engine/exec"
        --containerd-namespace guerite-testbed --containerd-plugins-namespace guerite-testbed-plugins
        --bridge gbrside --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false)
      # Its own bridge, never `--bridge none`: a dockerd without a default bridge deletes the
      # host's docker0 at every start.
      ip link show gbrside >/dev/null 2>&1 || {
        ip link add name gbrside type bridge
        ip addr add 172.27.27.1/24 dev gbrside
      }
      ip link set gbrside up
    fi
    mkdir -p "$(dirname "$sock")"
    log "starting dockerd on $DOCKER_HOST (log: $tb/dockerd.log)"
    # setsid+nohup: the daemon must outlive this script and the test harness's process group.
    setsid nohup dockerd "${args[@]}" >>"$tb/dockerd.log" 2>&1 </dev/null &
    pid=$!
  fi
  for ((i = 0; i < 60; i++)); do
    engine_answers && break
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$tb/dockerd.log" >&2; die "dockerd exited"; }
    sleep 1
  done
  engine_answers || { tail -n 30 "$tb/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }
fi

# --- base image --------------------------------------------------------------------------------
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
  log "building $base_image"
  ctx="$tb/base-image"
  mkdir -p "$ctx"
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sleep", "3600"]
EOF
  # The legacy builder works the same on every engine and needs no buildx plugin.
  DOCKER_BUILDKIT=0 docker build -q -t "$base_image" "$ctx" >/dev/null 2>"$tb/base-image.log" ||
    { cat "$tb/base-image.log" >&2; die "building $base_image failed"; }
  docker run --rm "$base_image" sh -c 'test -x /bin/sleep' || die "$base_image does not run"
fi

# --- registries --------------------------------------------------------------------------------
free_port() {
  local port
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    return
  fi
  while :; do # no python3: probe random ports until nothing accepts a connection
    port=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

v2_status() { curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$1/v2/" || true; }

# ensure_registry NAME EXPECTED_STATUS: reuse the registry if it runs and answers /v2/ as expected,
# otherwise (re)start it on a new free port. Sets $port.
ensure_registry() {
  local name=$1 want=$2 cfg="$tb/registry-$1.yml" pidf="$tb/registry-$1.pid" pid attempt i
  if pid=$(recorded_pid "$pidf" docker-registry) && port=$(<"$tb/registry-$name.port") &&
    [[ $(v2_status "$port") == "$want" ]]; then
    log "reusing registry-$name on 127.0.0.1:$port"
    return
  fi
  stop_recorded "$pidf" docker-registry
  mkdir -p "$tb/registry-$name/data"
  for attempt in 1 2 3; do # another process may grab the port between the pick and the bind
    port=$(free_port)
    {
      echo "version: 0.1"
      echo "log: {level: info, formatter: text, accesslog: {disabled: false}}"
      echo "storage:"
      echo "  filesystem: {rootdirectory: $tb/registry-$name/data}"
      echo "  delete: {enabled: true}"
      echo "http: {addr: 127.0.0.1:$port, secret: guerite-testbed-$name}"
      [[ $name != auth ]] || echo "auth: {htpasswd: {realm: guerite-testbed, path: $tb/registry-auth.htpasswd}}"
    } >"$cfg"
    echo "$port" >"$tb/registry-$name.port"
    # The access log (combined format, one line per request) goes to stdout, the rest to stderr.
    setsid nohup docker-registry serve "$cfg" >>"$tb/registry-$name.log" 2>&1 </dev/null &
    echo $! >"$pidf"
    for ((i = 0; i < 50; i++)); do
      [[ $(v2_status "$port") == "$want" ]] && { log "started registry-$name on 127.0.0.1:$port"; return; }
      kill -0 "$(<"$pidf")" 2>/dev/null || break
      sleep 0.1
    done
    tail -n 5 "$tb/registry-$name.log" >&2
    stop_recorded "$pidf" docker-registry
  done
  die "registry-$name did not start"
}

# Pushes the base image through this engine, once per engine/registry pair, so a broken insecure
# registry setting (dockerd treats 127.0.0.0/8 as plain http) or login shows up here, not in tests.
verify_push() {
  local name=$1 port=$2 ref="127.0.0.1:$2/testbed/probe:latest" mark="$tb/registry-$1.verified"
  local client=()
  [[ $(cat "$mark" 2>/dev/null) != "$DOCKER_HOST $port" ]] || return 0
  if [[ ${3:-} == login ]]; then
    # A throwaway client config keeps the credentials out of ~/.docker.
    cfgdir=$(mktemp -d "$tb/docker-config.XXXXXX")
    trap 'rm -rf "$cfgdir"' EXIT
    client=(--config "$cfgdir")
    printf '%s' "$auth_password" | docker "${client[@]}" login -u "$auth_user" --password-stdin \
      "127.0.0.1:$port" >"$tb/login.log" 2>&1 || { cat "$tb/login.log" >&2; die "docker login to registry-$name failed"; }
  fi
  docker tag "$base_image" "$ref"
  if ! docker "${client[@]}" push "$ref" >"$tb/push.log" 2>&1; then
    cat "$tb/push.log" >&2
    docker rmi "$ref" >/dev/null
    die "push to registry-$name failed"
  fi
  docker rmi "$ref" >/dev/null
  [[ ${3:-} != login ]] || docker "${client[@]}" logout "127.0.0.1:$port" >/dev/null 2>&1
  echo "$DOCKER_HOST $port" >"$mark"
}

# Rewritten only when wrong: bcrypt salts differ, so rewriting would change the file on each run.
htpasswd -vb "$tb/registry-auth.htpasswd" "$auth_user" "$auth_password" >/dev/null 2>&1 ||
  htpasswd -Bbc "$tb/registry-auth.htpasswd" "$auth_user" "$auth_password" 2>/dev/null
ensure_registry plain 200
plain_port=$port
ensure_registry auth 401
auth_port=$port

verify_push plain "$plain_port"
verify_push auth "$auth_port" login

# --- env file ----------------------------------------------------------------------------------
env_file="$tb/env"
cat >"$env_file.tmp" <<EOF
export DOCKER_HOST=$DOCKER_HOST
export GUERITE_TEST_REGISTRY=127.0.0.1:$plain_port
export GUERITE_TEST_AUTH_REGISTRY=127.0.0.1:$auth_port
export GUERITE_TEST_AUTH_USER=$auth_user
export GUERITE_TEST_AUTH_PASSWORD=$auth_password
export GUERITE_TEST_BASE_IMAGE=$base_image
export GUERITE_TEST_REGISTRY_LOG=$tb/registry-plain.log
export GUERITE_TEST_AUTH_REGISTRY_LOG=$tb/registry-auth.log
EOF
mv "$env_file.tmp" "$env_file"

# The second engine is still experimental: report its failure but keep the bed usable.
engine26="$root/contrib/testbed-engine26.sh"
if [[ -x $engine26 ]]; then
  cp "$env_file" "$env_file.base"
  # On failure drop whatever it appended, so the tests never see a half-made second engine.
  TESTBED_ENV="$env_file" "$engine26" ||
    { mv "$env_file.base" "$env_file"; log "WARNING: $engine26 failed; continuing without it"; }
  rm -f "$env_file.base"
fi

server=$(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo '?')
cat <<EOF
testbed ready ($env_file)
  engine         $DOCKER_HOST, $server
  registry       127.0.0.1:$plain_port   log $tb/registry-plain.log
  auth registry  127.0.0.1:$auth_port   user $auth_user, log $tb/registry-auth.log
  base image     $base_image
source it with:  . $env_file
EOF
