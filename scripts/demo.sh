#!/usr/bin/env bash
# warren's main job on one machine, with nothing to point it at: starts a throwaway
# OpenSSH sshd on loopback (fresh keys in a temp dir), runs `warren run` with a local (-L),
# a SOCKS (-D) and a remote (-R, port 0) forward to a small web server, fetches a page
# through each, then stops warren with SIGTERM. Run as root on a fresh Debian machine it
# installs what it needs (openssh-server, curl, python3).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then echo "demo: please install ${need[*]}" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[[ -d /run/sshd ]] || { [[ $(id -u) -eq 0 ]] && mkdir -p /run/sshd; }

cargo build --release --locked -q
warren=$PWD/target/release/warren

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
# Free loopback ports for this demo (the tests never do this: they bind port 0 themselves).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ssh_port=$(free_port); web_port=$(free_port); l_port=$(free_port); d_port=$(free_port)

ssh-keygen -q -t ed25519 -N '' -f "$tmp/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$tmp/id_ed25519"
cp "$tmp/id_ed25519.pub" "$tmp/authorized_keys"
cat > "$tmp/sshd_config" <<CFG
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $tmp/host_key
AuthorizedKeysFile $tmp/authorized_keys
PidFile none
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
CFG
/usr/sbin/sshd -D -e -f "$tmp/sshd_config" 2>"$tmp/sshd.log" & pids+=($!)
echo "[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$tmp/host_key.pub")" > "$tmp/known_hosts"

mkdir "$tmp/www" && echo "hello through warren" > "$tmp/www/hello.txt"
python3 -m http.server --bind 127.0.0.1 --directory "$tmp/www" "$web_port" >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$web_port/hello.txt" >/dev/null && break; sleep 0.1; done

cat > "$tmp/warren.toml" <<CFG
[daemon]
control_socket = "$tmp/warren.sock"
shutdown_grace = "2s"

[hosts.demo]
hostname = "127.0.0.1"
port = $ssh_port
user = "$(id -un)"
identity_files = ["$tmp/id_ed25519"]
known_hosts = ["$tmp/known_hosts"]
agent = false

[[forward]]
name = "web-local"
host = "demo"
type = "local"
listen = "127.0.0.1:$l_port"
connect = "127.0.0.1:$web_port"

[[forward]]
name = "socks"
host = "demo"
type = "dynamic"
listen = "127.0.0.1:$d_port"

[[forward]]
name = "web-reverse"
host = "demo"
type = "remote"
listen = "127.0.0.1:0"
connect = "127.0.0.1:$web_port"
CFG

echo "== warren check"; "$warren" check -c "$tmp/warren.toml"
echo "== warren run"
RUST_LOG=${RUST_LOG:-info} "$warren" run -c "$tmp/warren.toml" 2>"$tmp/warren.log" & warren_pid=$!; pids+=($warren_pid)
for _ in $(seq 100); do grep -q "remote listener up" "$tmp/warren.log" && break; sleep 0.1; done
sed 's/^/   | /' "$tmp/warren.log"
reverse_port=$(sed -n 's/.*remote listener up listen=127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/warren.log" | head -1)
echo "== -L  curl http://127.0.0.1:$l_port/hello.txt";  curl -fsS "http://127.0.0.1:$l_port/hello.txt" || { cat "$tmp/warren.log"; cat "$tmp/sshd.log"; exit 1; }
echo "== -D  curl --socks5-hostname 127.0.0.1:$d_port http://localhost:$web_port/hello.txt"
curl -fsS --socks5-hostname "127.0.0.1:$d_port" "http://localhost:$web_port/hello.txt"
echo "== -R  (the server listens on port $reverse_port) curl http://127.0.0.1:$reverse_port/hello.txt"
curl -fsS "http://127.0.0.1:$reverse_port/hello.txt"
echo "== SIGTERM"; kill -TERM "$warren_pid"; wait "$warren_pid"; echo "warren exited with $?"
