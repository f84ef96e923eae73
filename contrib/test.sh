#!/usr/bin/env bash
# The test command of the README: makes the test bed (engine, loopback registries, test
# image; installs what is missing) and runs every test against it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/contrib/testbed.sh"
cd "$root"
# The integration tests mostly wait on the engine and the clock, not on the CPU: run many at once.
cargo test --locked --features test-hooks -- --test-threads 16
