#!/usr/bin/python3
"""An SSH server that asks keyboard-interactive questions sshd's PAM does not, for
kbd_interactive.rs.

Usage: kbd_interactive_server.py HOST_KEY MODE PASSWORD

Listens on 127.0.0.1, port 0, and prints the bound port on stdout as one line. Offers only
keyboard-interactive; what it asks depends on MODE:

  pam-then-empty  "Password: " with echo off, then an info request with no prompts (as some
                  servers send as a final step); accepts when the first answer was PASSWORD.
                  Prints "answered N" for each response it gets (N responses) and
                  "accepted" or "rejected".
  two-prompts     "Password: " and "Verification code: " at once.
  echoed          "Username: " with echo on.

Exits when stdin closes (the test ended) or after 120 s.
"""

import os
import socket
import sys
import threading

try:
    import paramiko
except ImportError:
    sys.exit(
        "kbd_interactive_server.py: paramiko is missing; install it with "
        "`apt-get install -y python3-paramiko` (for /usr/bin/python3)"
    )


def out(line):
    """One line on stdout, for the test to read."""
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


class Server(paramiko.ServerInterface):
    def __init__(self, mode, password):
        self.mode = mode
        self.password = password
        self.right = False
        self.rounds = 0

    def get_allowed_auths(self, username):
        return "keyboard-interactive"

    def check_auth_interactive(self, username, submethods):
        if self.mode == "two-prompts":
            return paramiko.InteractiveQuery(
                "", "", ("Password: ", False), ("Verification code: ", False)
            )
        if self.mode == "echoed":
            return paramiko.InteractiveQuery("", "", ("Username: ", True))
        return paramiko.InteractiveQuery("", "", ("Password: ", False))

    def check_auth_interactive_response(self, responses):
        out(f"answered {len(responses)}")
        self.rounds += 1
        if self.mode == "pam-then-empty" and self.rounds == 1:
            self.right = list(responses) == [self.password]
            return paramiko.InteractiveQuery("", "")
        out("accepted" if self.right else "rejected")
        return paramiko.AUTH_SUCCESSFUL if self.right else paramiko.AUTH_FAILED


def serve(conn, host_key, mode, password):
    transport = paramiko.Transport(conn)
    transport.add_server_key(host_key)
    transport.start_server(server=Server(mode, password))
    while transport.is_active():
        transport.accept(timeout=1)


def main():
    host_key = paramiko.Ed25519Key.from_private_key_file(sys.argv[1])
    mode, password = sys.argv[2], sys.argv[3]
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    threading.Timer(120.0, os._exit, (2,)).start()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    out(listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        threading.Thread(
            target=serve, args=(conn, host_key, mode, password), daemon=True
        ).start()


if __name__ == "__main__":
    main()
