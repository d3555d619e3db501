"""A script using `warren connect --json` the way a user's would (standard library only).

Usage: scripts_client.py WARREN SOCKS_HOST:SOCKS_PORT CONNECT_ARGS...

Starts `WARREN connect --json CONNECT_ARGS...` with its stdout on a pipe, reads one JSON
object per forward (as many as CONNECT_ARGS has -L, -R and -D), connects to each announced
address at once (no sleep, no retry: the announcement promises it listens), sends random
bytes and checks that the same bytes come back (through a SOCKS5 CONNECT to SOCKS_HOST:PORT
for a dynamic forward). Then it stops warren with SIGTERM and checks that it exits 0.

Prints one line per forward, `echoed BYTES bytes via TYPE LISTEN NAME`, then
`warren exited 0`; exits 0 when all of that held, 1 with the reason on stderr otherwise.
"""

import ctypes
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading

# The whole script's deadline, seconds; the Rust test waits a little longer.
DEADLINE = 60
# Bytes sent through each forward.
SIZE = 1024 * 1024
PR_SET_PDEATHSIG = 1


class Timeout(Exception):
    pass


def on_alarm(_signum, _frame):
    raise Timeout(f"not done within {DEADLINE} s")


def die_with_parent():
    """In the child before exec: warren gets SIGTERM if this script dies first."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def host_port(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RuntimeError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def socks5_connect(sock, target):
    host, port = host_port(target)
    sock.sendall(b"\x05\x01\x00")
    if recv_exact(sock, 2) != b"\x05\x00":
        raise RuntimeError("SOCKS5: no-auth method refused")
    name = host.encode()
    sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port))
    reply = recv_exact(sock, 4)
    if reply[1] != 0:
        raise RuntimeError(f"SOCKS5 CONNECT {target} failed: reply {reply[1]}")
    # The bound address: IPv4 (4), IPv6 (16) or a name, then the port.
    kind = reply[3]
    length = {1: 4, 4: 16}.get(kind) or recv_exact(sock, 1)[0]
    recv_exact(sock, length + 2)


def echo_round_trip(sock):
    """Sends SIZE random bytes (then half-closes) while reading to EOF; the digests must match."""
    payload = os.urandom(SIZE)
    sent = hashlib.sha256(payload).hexdigest()
    failed = []

    def send():
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            failed.append(e)

    # A thread sends while this one reads, so that neither side's buffers fill up.
    sender = threading.Thread(target=send)
    sender.start()
    received = hashlib.sha256()
    total = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received.update(chunk)
        total += len(chunk)
    sender.join()
    if failed:
        raise RuntimeError(f"send failed: {failed[0]}")
    if total != SIZE or received.hexdigest() != sent:
        raise RuntimeError(
            f"echo mismatch: sent {SIZE} bytes ({sent}), got {total} ({received.hexdigest()})"
        )
    return total


def check_forward(line, socks_target):
    fwd = json.loads(line)
    if set(fwd) != {"forward", "type", "listen", "connect"}:
        raise RuntimeError(f"unexpected keys in {line!r}")
    kind = fwd["type"]
    if kind not in ("local", "remote", "dynamic"):
        raise RuntimeError(f"unknown type in {line!r}")
    if (fwd["connect"] is None) != (kind == "dynamic"):
        raise RuntimeError(f"connect must be null exactly for a dynamic forward: {line!r}")
    host, port = host_port(fwd["listen"])
    if port == 0:
        raise RuntimeError(f"port 0 announced: {line!r}")
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        if kind == "dynamic":
            socks5_connect(sock, socks_target)
        total = echo_round_trip(sock)
    print(f"echoed {total} bytes via {kind} {fwd['listen']} {fwd['forward']}", flush=True)


def main():
    warren, socks_target, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    expected = sum(1 for a in args if a in ("-L", "-R", "-D"))
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(DEADLINE)
    proc = subprocess.Popen(
        [warren, "connect", "--json", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    try:
        for _ in range(expected):
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"warren's stdout ended (exit {proc.wait()})")
            check_forward(line, socks_target)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait()
        if code != 0:
            raise RuntimeError(f"warren exited {code} after SIGTERM")
        rest = proc.stdout.read()
        if rest:
            raise RuntimeError(f"more on warren's stdout than the announcement: {rest!r}")
        print(f"warren exited {code}", flush=True)
    except (Timeout, RuntimeError, OSError, ValueError) as e:
        print(f"scripts_client: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.alarm(0)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
