#!/usr/bin/python3
"""A deliberately hostile SSH server for warren's end-to-end tests (hostile_server.rs).

Usage: hostile_server.py HOST_KEY [FLOOD_MIB] [ATTACK_N] [LIMIT_SECONDS]

Listens on 127.0.0.1, port 0, and prints the bound port on stdout as one line. Accepts
public-key authentication with any key. What a client's `direct-tcpip` channel gets depends
on the destination port it asks for (nothing is connected to):

  1  flood:  FLOOD_MIB MiB (default 64) in maximum-size packets, ignoring the client's
             window, printing "flood-half BYTES" on stdout half-way and "flood-sent BYTES"
             at the end; then keeps the channel open;
  2  echo:   sends back what it receives, until EOF;
  3  attack: the server opens toward the client ATTACK_N (default 200) channels of each
             type the client did not ask for, records how each open failed, writes a
             one-line JSON summary {TYPE: {CODE: COUNT}} on this channel and closes it
             ("opened" counts opens the client accepted: a bug); then prints "attack-done".

Exits when stdin closes (the test ended) or after LIMIT_SECONDS (default 120), whichever
comes first, so that it never outlives the test.
"""

import json
import logging
import os
import socket
import sys
import threading

try:
    import paramiko
except ImportError:
    sys.exit(
        "hostile_server.py: paramiko is missing; install it with "
        "`apt-get install -y python3-paramiko` (for /usr/bin/python3)"
    )

FLOOD, ECHO, ATTACK = 1, 2, 3


# --- the window, ignored ------------------------------------------------------------------------
# paramiko waits for the peer's window before each data packet and counts down what it sends.
# A channel marked `ignore_window` sends a maximum-size packet at once and counts nothing, so
# window adjustments (or their absence) change nothing.
_wait_for_send_window = paramiko.Channel._wait_for_send_window


def _window_ignored(self, size):
    if getattr(self, "ignore_window", False):
        if self.closed or self.eof_sent:
            return 0
        return min(size, self.out_max_packet_size - 64)
    return _wait_for_send_window(self, size)


paramiko.Channel._wait_for_send_window = _window_ignored


def out(line):
    """One line on stdout, for the test to read."""
    print(line, flush=True)


# --- per-port behaviours ------------------------------------------------------------------------
def flood(transport, chan, mib):
    chan.ignore_window = True
    block = b"\xa5" * (chan.out_max_packet_size - 64)
    sent, total = 0, mib * 1024 * 1024
    while sent < total:
        n = chan.send(block[: total - sent])
        if n == 0:
            break  # the channel closed
        if sent < total // 2 <= sent + n:
            out(f"flood-half {sent + n}")
        sent += n
    out(f"flood-sent {sent}")
    # The channel stays open until the client closes it or the server exits.


def echo(transport, chan, _):
    while True:
        data = chan.recv(65536)
        if not data:
            break
        chan.sendall(data)
    chan.shutdown_write()
    chan.close()


# The channel types a client that asked for none of them must refuse, and the addresses put in
# the open (x11: originator; direct-tcpip and forwarded-tcpip: connected-to, then originator;
# port 4444 is a listener the client never requested).
UNREQUESTED = [
    ("session", {}),
    ("x11", {"src_addr": ("127.0.0.1", 6010)}),
    ("auth-agent@openssh.com", {}),
    ("direct-tcpip", {"dest_addr": ("127.0.0.1", 22), "src_addr": ("127.0.0.1", 40001)}),
    ("forwarded-tcpip", {"dest_addr": ("127.0.0.1", 4444), "src_addr": ("127.0.0.1", 40002)}),
]


def attack(transport, chan, n):
    summary = {kind: {} for kind, _ in UNREQUESTED}
    # One open at a time: paramiko keeps the last open failure per transport, not per channel.
    for _ in range(n):
        for kind, addrs in UNREQUESTED:
            try:
                transport.open_channel(kind, timeout=10, **addrs).close()
                outcome = "opened"
            except paramiko.ChannelException as e:
                outcome = str(e.code)
            except paramiko.SSHException as e:
                outcome = f"error: {e}"
            summary[kind][outcome] = summary[kind].get(outcome, 0) + 1
    chan.sendall((json.dumps(summary, sort_keys=True) + "\n").encode())
    chan.shutdown_write()
    chan.close()
    out("attack-done")


# --- the server ---------------------------------------------------------------------------------
class Server(paramiko.ServerInterface):
    def __init__(self):
        self.ports = {}  # channel id -> requested destination port

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        self.ports[chanid] = destination[1]
        return paramiko.OPEN_SUCCEEDED


def serve(conn, host_key, args):
    server = Server()
    transport = paramiko.Transport(conn)
    transport.add_server_key(host_key)
    transport.start_server(server=server)
    handlers = {FLOOD: (flood, args["mib"]), ECHO: (echo, None), ATTACK: (attack, args["n"])}
    while transport.is_active():
        chan = transport.accept(timeout=1)
        if chan is None:
            continue
        handler = handlers.get(server.ports.pop(chan.get_id(), None))
        if handler is None:
            chan.close()
            continue
        threading.Thread(target=handler[0], args=(transport, chan, handler[1]), daemon=True).start()


def main():
    host_key = paramiko.Ed25519Key.from_private_key_file(sys.argv[1])
    args = {
        "mib": int(sys.argv[2]) if len(sys.argv) > 2 else 64,
        "n": int(sys.argv[3]) if len(sys.argv) > 3 else 200,
    }
    limit = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
    # Never outlive the test: exit at EOF on stdin, or after `limit` seconds.
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    threading.Timer(limit, os._exit, (2,)).start()
    # paramiko's errors go to stderr, except the expected open failures of the attack.
    logging.basicConfig(level=logging.WARNING, format="hostile_server: %(name)s: %(message)s")
    logging.getLogger("paramiko.transport").addFilter(
        lambda r: "open FAILED" not in r.getMessage()
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    out(listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, host_key, args), daemon=True).start()


if __name__ == "__main__":
    main()
