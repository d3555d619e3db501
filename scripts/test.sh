#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this script).
# On a fresh Debian machine, run as root: it installs what the end-to-end tests need
# (OpenSSH's sshd and client, iproute2, netcat, curl, openssl, python3 with paramiko and
# prometheus_client, patch,
# man-db for the manual pages, and systemd for `systemd-analyze` of the units), prepares
# /run/sshd, then checks that vendor/russh is russh 0.65.1 plus its patches and runs rustfmt,
# clippy with -D warnings, russh's own library tests and every test of warren.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- system packages -------------------------------------------------------------------------
declare -A package_of=(
  [/usr/sbin/sshd]=openssh-server
  [ssh]=openssh-client
  [ssh-keygen]=openssh-client
  [ssh-agent]=openssh-client
  [ip]=iproute2
  [nc]=netcat-openbsd
  [curl]=curl
  [openssl]=openssl
  [python3]=python3
  [systemd-analyze]=systemd
  [patch]=patch
  [man]=man-db
)
missing=()
for cmd in "${!package_of[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${package_of[$cmd]}")
done
# The hostile-server test (tests/e2e/hostile_server.py) runs paramiko under the system python3.
/usr/bin/python3 -c 'import paramiko' >/dev/null 2>&1 || missing+=(python3-paramiko)
# The metrics tests parse /metrics with the Prometheus project's own Python parser.
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || missing+=(python3-prometheus-client)
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [[ $(id -u) -eq 0 ]]; then
    echo "test.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test.sh: missing packages: ${missing[*]} (run as root to install them with apt-get)" >&2
    exit 1
  fi
fi
# promtool checks the README's alert rules. It comes from Debian's `prometheus` package,
# unpacked into target/tools rather than installed: installing would start a Prometheus server.
if ! command -v promtool >/dev/null 2>&1 && [[ ! -x target/tools/promtool ]]; then
  mkdir -p target/tools
  (
    cd target/tools
    apt-get download prometheus >/dev/null 2>&1 || {
      [[ $(id -u) -eq 0 ]] && apt-get update -qq && apt-get download prometheus >/dev/null
    }
    dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x --strip-components=3 ./usr/bin/promtool
    rm -f prometheus_*.deb
  ) || echo "test.sh: cannot unpack promtool from Debian's prometheus package" >&2
fi
# sshd refuses to start without its privilege-separation directory.
if [[ ! -d /run/sshd ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    mkdir -p /run/sshd && chmod 0755 /run/sshd
  else
    echo "test.sh: /run/sshd is missing (create it as root)" >&2
    exit 1
  fi
fi

# --- toolchain --------------------------------------------------------------------------------
# rust-toolchain.toml pins 1.95.0; where rustup only knows it as "stable", name it.
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if command -v rustup >/dev/null 2>&1 && ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
  if rustup run stable rustc --version 2>/dev/null | grep -q "^rustc $toolchain "; then
    rustup toolchain link "$toolchain" "$(rustup run stable rustc --print sysroot)"
  fi
fi

# --- checks and tests -------------------------------------------------------------------------
set -x
scripts/check-vendor.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# russh's own library tests, with warren's patches (its own workspace and lock file). Its
# ssh-agent tests are skipped: they connect as soon as the agent's socket file exists, before
# the agent listens, and fail now and then (ECONNREFUSED); warren's own tests use a real agent.
CARGO_TARGET_DIR=target/vendor-russh cargo test --manifest-path vendor/russh/Cargo.toml --lib --locked \
  -- --skip keys::test::test_client_agent
cargo test --workspace --locked
