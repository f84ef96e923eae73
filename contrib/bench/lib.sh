# Shared by the benchmarks: logging, tools, the test bed and the release binary.
# Sourced with `root` set to the repository; sets DOCKER_HOST and the bed's variables, `image`
# (the bed's base image) and `bin` (an absolute path to the guerite binary).

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# need COMMAND[:PACKAGE]...: installs the Debian packages of the commands that are missing.
need() {
  local missing=() spec cmd pkg
  for spec in "$@"; do
    cmd=${spec%%:*}
    pkg=${spec#*:}
    if [[ $cmd == /* ]]; then [[ -x $cmd ]] || missing+=("$pkg"); else command -v "$cmd" >/dev/null || missing+=("$pkg"); fi
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    # On stderr: stdout is the benchmark's result.
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# The test bed, made if missing: its env file, a unix socket, the base image.
use_bed() {
  if [[ ! -s $root/target/testbed/env ]]; then
    log "no target/testbed/env: running contrib/testbed.sh"
    "$root/contrib/testbed.sh"
  fi
  # shellcheck disable=SC1091
  source "$root/target/testbed/env"
  # Another engine than the bed's, e.g. a private one (contrib/private-engine.sh).
  if [[ -n ${BENCH_DOCKER_HOST:-} ]]; then export DOCKER_HOST=$BENCH_DOCKER_HOST; fi
  [[ ${DOCKER_HOST:-} == unix://* ]] || die "DOCKER_HOST=${DOCKER_HOST:-} is not a unix socket"
  [[ -S ${DOCKER_HOST#unix://} ]] || die "${DOCKER_HOST#unix://} is not a socket"
  image=${GUERITE_TEST_BASE_IMAGE:-guerite-test/busybox:base}
  docker image inspect "$image" >/dev/null 2>&1 || die "image $image is missing (run contrib/testbed.sh)"
}

# GUERITE_BIN, or target/release/guerite rebuilt when missing or older than the sources.
use_binary() {
  if [[ -n ${GUERITE_BIN:-} ]]; then
    bin=$GUERITE_BIN
    [[ -x $bin ]] || die "GUERITE_BIN=$bin is not executable"
  else
    bin=$root/target/release/guerite
    local stale=
    if [[ ! -x $bin ]]; then
      stale="missing"
    elif [[ -n $(find "$root/src" "$root/Cargo.toml" "$root/Cargo.lock" -newer "$bin" -print -quit 2>/dev/null) ]]; then
      stale="older than the sources"
    fi
    if [[ -n $stale ]]; then
      log "release binary $stale: cargo build --release --locked"
      (cd "$root" && cargo build --release --locked) ||
        die "build failed (sources being edited?); set GUERITE_BIN to use an existing binary"
    fi
  fi
  bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
}
