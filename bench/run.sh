#!/usr/bin/env bash
# warren against OpenSSH (ssh -N, autossh -M 0) on loopback: builds target/release/warren,
# installs what is missing (as root on Debian), then runs bench/bench.py, which starts one
# throwaway sshd and measures both clients alternately. Arguments go to bench.py:
#   bench/run.sh                 # the full run (about 15 minutes)
#   bench/run.sh --quick         # 1 repetition, short runs, 1 000 connections only
#   bench/run.sh --only throughput,latency --out /tmp/table.md
# Everything it starts is stopped, and its temp dir removed, on exit (also on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v autossh >/dev/null || need+=(autossh)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then echo "bench: please install ${need[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ ! -d /run/sshd ]]; then
  if [[ $(id -u) -eq 0 ]]; then mkdir -p /run/sshd; else echo "bench: sshd needs /run/sshd" >&2; exit 1; fi
fi

cargo build --release --locked -q
# 10 000 held connections need ~10 000 descriptors in each of the client, sshd and the
# benchmark: raise the limit as far as allowed (bench.py raises its own soft limit too).
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec python3 bench/bench.py --warren target/release/warren "$@"
