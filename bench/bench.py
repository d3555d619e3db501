#!/usr/bin/env python3
"""warren against OpenSSH's `ssh -N` on loopback, in the same run, alternately.

Started by bench/run.sh (which builds target/release/warren and installs what is missing).
One throwaway sshd (fresh keys in a temp dir) serves every client. Each figure is measured
`--reps` times, the clients taking turns in rotating order, and reported as the median with
min and max, with the ratio warren/OpenSSH of the medians.

Figures: throughput (iperf3) through -L both ways and with 8 streams, through -R, an HTTP
download through -D; with `--only ciphers`, -L one stream up and down for each cipher warren
offers by default (warren with `ciphers = "NAME"` against `ssh -N -c NAME`); with
`--only scrape`, what Prometheus scraping costs warren: -L one stream up and down with
`metrics_listen` set, without and with a scraper doing `GET /metrics` every 100 ms; new
connection + 1-byte echo + close latency (p50/p99) through -L, -R and -D; client RSS idle
and per idle connection with 1 000 and 10 000 connections held through one forward; cold
start (launch to first byte echoed); recovery after the server session is killed or frozen
(warren against autossh -M 0, same keepalive settings).

Only loopback is used, every port is picked by binding port 0, and every process started
here (and every sshd child serving our clients) is ended on exit, the temp dir removed.
"""

import argparse
import asyncio
import http.client
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

LOOP = "127.0.0.1"
AES = "aes128-gcm@openssh.com"
# The ciphers warren offers by default, in its order (crates/warren/src/config/algorithms.rs).
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
           "aes128-ctr", "aes192-ctr", "aes256-ctr"]

# ---------------------------------------------------------------------------------------
# helper servers (run as separate processes: `bench.py --echo-server` / `--http-server F`)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            return max(want, soft)
        except (ValueError, OSError):
            continue
    return soft


def echo_server():
    raise_nofile()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport

        def data_received(self, data):
            self.t.write(data)

        def eof_received(self):
            return False

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, LOOP, 0, backlog=4096)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await srv.serve_forever()

    asyncio.run(main())


def delay_proxy(target, rtt_ms):
    """A long fat pipe: forwards to `target` (a port) with rtt_ms/2 of delay each way and
    unbounded buffering, so that only the SSH channel windows limit what is in flight.

    The proxy ends sshd's TCP connection, so its ACKs stand in for the client's kernel.
    It acknowledges what sshd sends at once (TCP_QUICKACK after each read): sshd does not set
    TCP_NODELAY without a terminal, so with the proxy's delayed ACK (up to 40 ms) Nagle held
    each small WINDOW_ADJUST of sshd whenever the upload paused, a stall the link itself does
    not add and that warren, which quick-ACKs its own reads, does not have outside this proxy."""
    raise_nofile()
    delay = rtt_ms / 2000.0

    async def pump(reader, writer, quickack=None):
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                if quickack is not None:
                    quickack.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                loop.call_later(delay, writer.write, data)
        except OSError:
            pass
        loop.call_later(delay, writer.close)

    async def client(reader, writer):
        try:
            r2, w2 = await asyncio.open_connection(LOOP, target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pump(reader, w2), pump(r2, writer, w2.get_extra_info("socket")))

    async def main():
        srv = await asyncio.start_server(client, LOOP, 0)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await srv.serve_forever()

    asyncio.run(main())


def http_server(path):
    import http.server

    size = os.path.getsize(path)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.flush()
            with open(path, "rb") as f:
                off = 0
                while off < size:
                    n = os.sendfile(self.connection.fileno(), f.fileno(), off, size - off)
                    if n == 0:
                        break
                    off += n

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer((LOOP, 0), Handler)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


# ---------------------------------------------------------------------------------------
# small utilities


def free_port():
    with socket.socket() as s:
        s.bind((LOOP, 0))
        return s.getsockname()[1]


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise ConnectionError("closed")
        buf += d
    return buf


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def children(pid):
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            out = [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid):
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        for c in children(p):
            seen.append(c)
            todo.append(c)
    return seen


def tcp_table():
    """Established loopback IPv4 TCP sockets: list of (local port, remote port, inode)."""
    rows = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if p[3] != "01":
                continue
            rows.append((int(p[1].split(":")[1], 16), int(p[2].split(":")[1], 16), int(p[9])))
    return rows


def socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    except OSError:
        pass
    return inodes


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_busy(seconds=1.0):
    """Share of all CPUs busy over `seconds` (anything running on the machine)."""

    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v), idle

    t1, i1 = sample()
    time.sleep(seconds)
    t2, i2 = sample()
    return 1.0 - (i2 - i1) / max(1, t2 - t1)


def pct(values, p):
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# the bench


class Failed(Exception):
    pass


class Client:
    """One tunnel client (warren, ssh or autossh) with its forwards' ports."""

    def __init__(self, kind, proc, ports, log_path):
        self.kind = kind
        self.proc = proc
        self.ports = ports
        self.log_path = log_path

    @property
    def pid(self):
        """The process doing the SSH work (ssh under autossh)."""
        if self.kind == "autossh":
            kids = children(self.proc.pid)
            return kids[0] if kids else None
        return self.proc.pid

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="warren-bench.")
        self.procs = []  # everything we started
        self.user = os.environ.get("USER") or subprocess.run(
            ["id", "-un"], capture_output=True, text=True).stdout.strip()
        self.results = {}  # figure -> client -> list of values
        self.notes = []
        self.ciphers = {}
        self.cipher_results = {}  # cipher -> (direction, figure, client) -> list of values
        self.cipher_macs = {}  # (cipher, client) -> MAC sshd negotiated
        self.scrape_results = {}  # (direction, figure, mode) -> list of values
        self.scrape_pairs = {}  # (direction, figure) -> scraped/unscraped of each repetition
        self.scrapes = None  # the Scraper totals over every scraped run
        self.scrape_cpu = None  # (warren CPU s per scrape, scrapes) without traffic
        self.loads = []
        self.seq = 0

    # -- process management ------------------------------------------------------------

    def spawn(self, cmd, stdout=None, stderr=None, env=None):
        p = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, wait=3.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def cleanup(self):
        for p in list(self.procs):
            try:
                self.stop(p, wait=2.0)
            except Exception:
                pass
        # sshd children that served our clients (a frozen one would not exit by itself).
        for pid in getattr(self, "sshd_kids_seen", set()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- environment ---------------------------------------------------------------------

    def setup(self):
        nofile = raise_nofile()
        self.nofile = nofile
        t = self.tmp
        for name in ("host_key", "id_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{t}/{name}"],
                           check=True)
        shutil.copy(f"{t}/id_ed25519.pub", f"{t}/authorized_keys")
        self.sshd_port = free_port()
        root_login = "PermitRootLogin prohibit-password\n" if os.geteuid() == 0 else ""
        # DEBUG1 until the user is known (so the negotiated cipher of every client is
        # logged), then INFO for the session itself: no per-channel log lines.
        with open(f"{t}/sshd_config", "w") as f:
            f.write(f"""Port {self.sshd_port}
ListenAddress {LOOP}
HostKey {t}/host_key
AuthorizedKeysFile {t}/authorized_keys
PidFile none
StrictModes no
UsePAM no
{root_login}AllowTcpForwarding yes
MaxStartups 100:30:200
MaxSessions {self.args.max_sessions}
LogLevel DEBUG1
Match all
    LogLevel INFO
""")
        self.sshd_log = f"{t}/sshd.log"
        self.sshd = self.spawn(["/usr/sbin/sshd", "-D", "-f", f"{t}/sshd_config",
                                "-E", self.sshd_log])
        self.sshd_kids_seen = set()
        with open(f"{t}/host_key.pub") as f:
            key = " ".join(f.read().split()[:2])
        with open(f"{t}/known_hosts", "w") as f:
            f.write(f"[{LOOP}]:{self.sshd_port} {key}\n")
            if self.args.rtt:
                self.slow_port = self._helper(["--delay-proxy", str(self.sshd_port),
                                               str(self.args.rtt)])
                f.write(f"[{LOOP}]:{self.slow_port} {key}\n")
        # helper servers
        self.echo = self._helper(["--echo-server"])
        big = f"{t}/big.bin"
        with open(big, "wb") as f:
            f.truncate(self.args.http_mib * 1024 * 1024)  # sparse: no disk, page cache zeros
        # Read once now: the first read of the file fills the page cache (about half the
        # speed of later ones), which would otherwise slow whichever client downloads first.
        with open(big, "rb") as f:
            while f.read(1 << 20):
                pass
        self.http = self._helper(["--http-server", big])
        self.iperf_port = free_port()
        self.iperf = self.spawn(["iperf3", "-s", "-B", LOOP, "-p", str(self.iperf_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection((LOOP, self.sshd_port), 1).close()
                socket.create_connection((LOOP, self.iperf_port), 1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise Failed("sshd or iperf3 did not start: " + self.sshd_text())
                time.sleep(0.05)

    def _helper(self, extra):
        p = self.spawn([sys.executable, os.path.abspath(__file__)] + extra,
                       stdout=subprocess.PIPE)
        port = int(p.stdout.readline())
        return port

    def sshd_text(self, offset=0):
        try:
            with open(self.sshd_log, errors="replace") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return ""

    def sshd_offset(self):
        try:
            return os.path.getsize(self.sshd_log)
        except OSError:
            return 0

    # -- clients -------------------------------------------------------------------------

    def start(self, kind, forwards=("L_iperf", "L_echo", "D", "R_iperf", "R_echo"),
              keepalive=None, reconnect_min=None, ready=True, slow=False, cipher=None,
              metrics=None):
        """Starts a client; `forwards` names what it carries. Returns when every forward
        works (unless ready=False: then right after launch, for the cold-start figure).
        `cipher`: the only cipher offered (warren `ciphers = "NAME"`, ssh `-c NAME`).
        `metrics`: a port for warren's `metrics_listen` (warren only)."""
        self.seq += 1
        n = self.seq
        ports = {}
        targets = {"L_iperf": self.iperf_port, "L_echo": self.echo,
                   "R_iperf": self.iperf_port, "R_echo": self.echo}
        for fw in forwards:
            if fw.startswith("L") or fw == "D":
                ports[fw] = free_port()
        logp = f"{self.tmp}/{kind}-{n}.log"
        if kind in ("warren", "before"):
            cfg = f"{self.tmp}/warren-{n}.toml"
            port = self.slow_port if slow else self.sshd_port
            host = [f'hostname = "{LOOP}"', f"port = {port}", f'user = "{self.user}"',
                    f'identity_files = ["{self.tmp}/id_ed25519"]',
                    f'known_hosts = ["{self.tmp}/known_hosts"]', "agent = false"]
            if keepalive:
                host += [f'keepalive_interval = "{keepalive[0]}s"',
                         f"keepalive_count_max = {keepalive[1]}"]
            if reconnect_min:
                host.append(f'reconnect_min = "{reconnect_min}"')
            if cipher:
                host.append(f'ciphers = "{cipher}"')
            daemon = [f'control_socket = "{self.tmp}/warren-{n}.sock"', 'shutdown_grace = "1s"']
            if metrics:
                daemon.append(f'metrics_listen = "{LOOP}:{metrics}"')
            text = ("[daemon]\n" + "\n".join(daemon) + "\n\n[hosts.bench]\n"
                    + "\n".join(host) + "\n")
            for fw in forwards:
                text += f'\n[[forward]]\nname = "{fw}"\nhost = "bench"\n'
                if fw.startswith("L"):
                    text += (f'type = "local"\nlisten = "{LOOP}:{ports[fw]}"\n'
                             f'connect = "{LOOP}:{targets[fw]}"\n')
                elif fw == "D":
                    text += f'type = "dynamic"\nlisten = "{LOOP}:{ports[fw]}"\n'
                else:
                    text += (f'type = "remote"\nlisten = "{LOOP}:0"\n'
                             f'connect = "{LOOP}:{targets[fw]}"\n')
            with open(cfg, "w") as f:
                f.write(text)
            binary = self.args.warren if kind == "warren" else self.args.before
            cmd = [binary, "run", "-c", cfg, "--log-format", "json"]
            if self.args.warren_log:
                cmd += ["--log-level", self.args.warren_log]
            env = None
            if kind == "before" and self.args.before_env:
                env = dict(os.environ, **dict(kv.split("=", 1) for kv in self.args.before_env))
        else:
            cmd = ["autossh", "-M", "0"] if kind == "autossh" else ["ssh"]
            port = self.slow_port if slow else self.sshd_port
            cmd += ["-N", "-F", "/dev/null", "-p", str(port),
                    "-i", f"{self.tmp}/id_ed25519", "-o", "IdentitiesOnly=yes",
                    "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.tmp}/known_hosts",
                    "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                    "-o", "ExitOnForwardFailure=yes", "-o", "UpdateHostKeys=no"]
            if kind == "ssh-aes":
                cmd += ["-c", AES]
            if cipher:
                cmd += ["-c", cipher]
                if self.args.ssh_mac:
                    cmd += ["-m", self.args.ssh_mac]
            if keepalive:
                cmd += ["-o", f"ServerAliveInterval={keepalive[0]}",
                        "-o", f"ServerAliveCountMax={keepalive[1]}"]
            for fw in forwards:
                if fw.startswith("L"):
                    cmd += ["-L", f"{LOOP}:{ports[fw]}:{LOOP}:{targets[fw]}"]
                elif fw == "D":
                    cmd += ["-D", f"{LOOP}:{ports[fw]}"]
                else:
                    cmd += ["-R", f"{LOOP}:0:{LOOP}:{targets[fw]}"]
            cmd.append(f"{self.user}@{LOOP}")
            env = dict(os.environ, AUTOSSH_GATETIME="0") if kind == "autossh" else None
        logf = open(logp, "w")
        t0 = time.perf_counter()
        p = self.spawn(cmd, stdout=logf, stderr=logf, env=env)
        logf.close()
        c = Client(kind, p, ports, logp)
        c.started = t0
        if ready:
            self.wait_ready(c, forwards)
        return c

    def wait_ready(self, c, forwards, timeout=20.0):
        deadline = time.time() + timeout
        want_r = [fw for fw in forwards if fw.startswith("R")]
        targets = {"R_iperf": self.iperf_port, "R_echo": self.echo}
        while True:
            if c.proc.poll() is not None and c.kind != "autossh":
                raise Failed(f"{c.kind} exited: {c.log_text()[-2000:]}")
            text = c.log_text()
            for fw in want_r:
                if fw in c.ports:
                    continue
                t = targets[fw]
                if c.kind in ("warren", "before"):
                    for line in text.splitlines():
                        try:
                            j = json.loads(line)
                        except ValueError:
                            continue
                        if (j.get("message") == "remote listener up"
                                and j.get("connect") == f"{LOOP}:{t}"):
                            c.ports[fw] = int(j["listen"].rsplit(":", 1)[1])
                else:
                    m = re.search(rf"Allocated port (\d+) for remote forward to {LOOP}:{t}\b",
                                  text)
                    if m:
                        c.ports[fw] = int(m.group(1))
            if all(fw in c.ports for fw in want_r):
                try:
                    if "L_echo" in c.ports:
                        echo_once(c.ports["L_echo"], timeout=2)
                    if "D" in c.ports:
                        echo_once(c.ports["D"], socks=self.echo, timeout=2)
                    if "R_echo" in c.ports:
                        echo_once(c.ports["R_echo"], timeout=2)
                    return
                except OSError:
                    pass
            if time.time() > deadline:
                raise Failed(f"{c.kind} not ready: {c.log_text()[-2000:]}")
            time.sleep(0.05)

    def cipher_of(self, c_start_offset):
        return self.negotiated(c_start_offset)[0]

    def negotiated(self, c_start_offset):
        """(cipher, MAC) of the first key exchange sshd logged after the offset."""
        m = re.search(r"kex: client->server cipher: (\S+) MAC: (\S+)",
                      self.sshd_text(c_start_offset))
        return (m.group(1), m.group(2)) if m else ("?", "?")

    def server_pids(self, c):
        """The sshd processes holding the server end of client `c`'s session."""
        cpid = c.pid
        mine = socket_inodes(cpid)
        table = tcp_table()
        cports = {lp for lp, rp, ino in table if rp == self.sshd_port and ino in mine}
        server_inodes = {ino for lp, rp, ino in table if lp == self.sshd_port and rp in cports}
        pids = [p for p in descendants(self.sshd.pid) if socket_inodes(p) & server_inodes]
        self.sshd_kids_seen.update(pids)
        return pids

    # -- measurements --------------------------------------------------------------------

    def record(self, fig, client, value):
        self.results.setdefault(fig, {}).setdefault(client, []).append(value)

    def kinds(self, all_kinds):
        if self.args.before:
            all_kinds = all_kinds[:1] + ["before"] + all_kinds[1:]
        return [k for k in all_kinds if k in self.args.clients or k == "before"]

    def turns(self, clients, rep):
        k = rep % len(clients)
        return clients[k:] + clients[:k]

    def throughput(self):
        a = self.args
        kinds = self.kinds(["warren", "ssh", "ssh-aes"])
        log("throughput: starting warren, ssh, ssh -c " + AES)
        cl = {}
        for k in kinds:
            off = self.sshd_offset()
            cl[k] = self.start(k)
            self.ciphers[k] = self.cipher_of(off)
        tests = [
            ("-L 1 stream up, iperf3 (Gbit/s)", "L_iperf", dict()),
            ("-L 1 stream down, iperf3 -R (Gbit/s)", "L_iperf", dict(reverse=True)),
            ("-L 8 streams up, iperf3 -P 8 (Gbit/s)", "L_iperf", dict(parallel=8)),
            ("-R 1 stream, iperf3 (Gbit/s)", "R_iperf", dict()),
        ]
        cpu = []

        def measure(name, k, run):
            c0 = cpu_seconds(cl[k].pid)
            v, moved = run()
            per_gib = (cpu_seconds(cl[k].pid) - c0) / (moved / 2**30)
            self.record(name, k, v / 1e9)
            cpu.append((name.replace(" (Gbit/s)", ", client CPU per GiB (s)"), k, per_gib))
            log(f"  {name} {k}: {v / 1e9:.2f} Gbit/s, client CPU {per_gib:.3f} s/GiB")

        for name, fw, kw in tests:
            for rep in range(a.reps):
                for k in self.turns(kinds, rep):
                    measure(name, k, lambda: iperf(cl[k].ports[fw], a.seconds, **kw))
        name = f"-D HTTP download of {a.http_mib} MiB, curl (Gbit/s)"
        for rep in range(a.reps):
            for k in self.turns(kinds, rep):
                measure(name, k, lambda: http_get(cl[k].ports["D"], self.http, a.http_mib))
        # CPU cost per byte moved: steadier than throughput on a shared machine.
        for name, k, v in cpu:
            self.record(name, k, v)
        self.cl = cl

    def cipher_group(self):
        """-L one stream up and down for each cipher: warren with `ciphers = "NAME"` beside
        `ssh -N -c NAME`, through the same sshd. Every client is started first (the cipher
        each negotiated checked in sshd's log: another one fails the run); then each
        repetition goes through every cipher, the clients taking turns, so that a change of
        load on a shared machine spreads over all ciphers instead of falling on the last."""
        a = self.args
        kinds = self.kinds(["warren", "ssh"])
        cl = {}
        try:
            for cipher in a.ciphers:
                for k in kinds:
                    off = self.sshd_offset()
                    cl[cipher, k] = self.start(k, forwards=("L_iperf", "L_echo"), cipher=cipher)
                    got, mac = self.negotiated(off)
                    if got != cipher:
                        raise Failed(f"{k} negotiated {got}, not {cipher}")
                    self.cipher_macs[cipher, k] = mac
                    log(f"ciphers: {k} with {cipher} (MAC {mac}) ready")
            for rep in range(a.reps):
                for cipher in a.ciphers:
                    per = self.cipher_results.setdefault(cipher, {})
                    for direction, kw in (("up", dict()), ("down", dict(reverse=True))):
                        for k in self.turns(kinds, rep):
                            c = cl[cipher, k]
                            c0 = cpu_seconds(c.pid)
                            v, moved = iperf(c.ports["L_iperf"], a.seconds, **kw)
                            per_gib = (cpu_seconds(c.pid) - c0) / (moved / 2**30)
                            per.setdefault((direction, "gbit", k), []).append(v / 1e9)
                            per.setdefault((direction, "cpu", k), []).append(per_gib)
                            log(f"  {cipher} {direction} {k}: {v / 1e9:.2f} Gbit/s, "
                                f"client CPU {per_gib:.3f} s/GiB")
        finally:
            for c in cl.values():
                self.stop(c.proc)

    def scrape_group(self):
        """What Prometheus scraping costs: -L one stream up and down through one warren with
        `metrics_listen` set, without a scraper and with one doing `GET /metrics` every
        `--scrape-every` s (a new connection each, the whole body read and checked), the two
        taking turns in each repetition. Gbit/s and warren's CPU seconds per GiB (what it
        spent answering the scrapes included), and the ratio scraped/unscraped: of the
        medians, and of each repetition's pair (steadier when the load drifts). Then, without
        traffic, scrapes back to back for 2 x --seconds: warren's CPU time per scrape, which
        gives the share of warren's forwarding CPU a scraper takes independently of the
        throughput noise."""
        a = self.args
        mport = free_port()
        off = self.sshd_offset()
        c = self.start("warren", forwards=("L_iperf", "L_echo"), metrics=mport)
        self.ciphers["warren"] = self.cipher_of(off)
        total = Scraper(mport, a.scrape_every)  # holds the totals, never started
        try:
            scrape_once(mport)
            modes = ["none", "scrape"]
            for rep in range(a.reps):
                for direction, kw in (("up", dict()), ("down", dict(reverse=True))):
                    got = {}
                    for mode in self.turns(modes, rep):
                        scraper = Scraper(mport, a.scrape_every) if mode == "scrape" else None
                        if scraper:
                            scraper.start()
                        c0 = cpu_seconds(c.pid)
                        try:
                            v, moved = iperf(c.ports["L_iperf"], a.seconds, **kw)
                            per_gib = (cpu_seconds(c.pid) - c0) / (moved / 2**30)
                        finally:
                            if scraper:
                                scraper.stop()
                        got[mode] = {"gbit": v / 1e9, "cpu": per_gib}
                        for fig, val in got[mode].items():
                            self.scrape_results.setdefault((direction, fig, mode), []).append(val)
                        extra = ""
                        if scraper:
                            total.add(scraper)
                            extra = (f", {len(scraper.latencies)} scrapes, mean "
                                     f"{statistics.mean(scraper.latencies or [0]) * 1e3:.2f} ms"
                                     + (f", {len(scraper.errors)} FAILED" if scraper.errors
                                        else ""))
                        log(f"  scrape {direction} {mode}: {v / 1e9:.2f} Gbit/s, "
                            f"warren CPU {per_gib:.3f} s/GiB{extra}")
                    for fig in ("gbit", "cpu"):
                        self.scrape_pairs.setdefault((direction, fig), []).append(
                            got["scrape"][fig] / got["none"][fig])
            n, c0, t0 = 0, cpu_seconds(c.pid), time.perf_counter()
            while time.perf_counter() - t0 < 2 * a.seconds:
                scrape_once(mport)
                n += 1
            self.scrape_cpu = ((cpu_seconds(c.pid) - c0) / n, n)
            log(f"  scrape: {n} back to back without traffic, warren CPU "
                f"{self.scrape_cpu[0] * 1e6:.0f} µs per scrape")
        finally:
            self.stop(c.proc)
        self.scrapes = total
        if total.errors:
            self.notes.append(f"{len(total.errors)} of "
                              f"{len(total.errors) + len(total.latencies)} scrapes failed, "
                              f"first: {total.errors[0]}")
        if not total.latencies:
            raise Failed("scrape: no scrape succeeded")

    def rtt(self):
        """Throughput over a link with a round-trip time (a delay proxy in front of sshd):
        what the channel windows allow, not what the CPUs can do."""
        a = self.args
        kinds = self.kinds(["warren", "ssh", "ssh-aes"])
        cl = {k: self.start(k, forwards=("L_iperf",), slow=True) for k in kinds}
        for name, kw in ((f"-L 1 stream down, {a.rtt} ms RTT, iperf3 -R (Gbit/s)",
                          dict(reverse=True)),
                         (f"-L 1 stream up, {a.rtt} ms RTT, iperf3 (Gbit/s)", dict())):
            for rep in range(a.reps):
                for k in self.turns(kinds, rep):
                    v, _ = iperf(cl[k].ports["L_iperf"], max(a.seconds, 4), **kw)
                    self.record(name, k, v / 1e9)
                    log(f"  {name} {k}: {v / 1e9:.3f} Gbit/s")
        for c in cl.values():
            self.stop(c.proc)

    def latency(self):
        a = self.args
        kinds = self.kinds(["warren", "ssh"])
        cl = getattr(self, "cl", None)
        if not cl:
            cl = {}
            for k in kinds:
                off = self.sshd_offset()
                cl[k] = self.start(k)
                self.ciphers[k] = self.cipher_of(off)
        paths = (("-L", "L_echo", None), ("-D", "D", self.echo), ("-R", "R_echo", None))
        for path, fw, socks in paths:
            self.latency_rounds(kinds, cl, path, fw, socks, "")
        # The same with connections already open through the session (a connection pool
        # behind a tunnel): both ssh and sshd walk every channel on each turn of their loop.
        n = 200 if a.quick else 1000
        held = {k: hold_open(cl[k].ports["L_echo"], n) for k in kinds}
        try:
            for k in kinds:
                if len(held[k]) < n:
                    self.notes.append(f"{k}: only {len(held[k])} of {n} connections held "
                                      "for the loaded latency figures")
            for path, fw, socks in paths[:2]:
                self.latency_rounds(kinds, cl, path, fw, socks, f", {n} other connections open")
        finally:
            for socks_held in held.values():
                for s in socks_held:
                    s.close()

    def latency_rounds(self, kinds, cl, path, fw, socks, label):
        a = self.args
        for rep in range(a.reps):
            for k in self.turns(kinds, rep):
                samples = []
                errors = 0
                cpu0 = cpu_seconds(cl[k].pid)
                for _ in range(a.iterations):
                    try:
                        samples.append(echo_once(cl[k].ports[fw], socks=socks))
                    except OSError:
                        errors += 1
                cpu = (cpu_seconds(cl[k].pid) - cpu0) / a.iterations * 1e6
                if errors:
                    self.notes.append(f"{k} {path}{label}: {errors} of {a.iterations} "
                                      "connect+echo attempts failed")
                p50, p99 = pct(samples, 50) * 1e6, pct(samples, 99) * 1e6
                self.record(f"{path} connect+echo+close p50{label} (µs)", k, p50)
                self.record(f"{path} connect+echo+close p99{label} (µs)", k, p99)
                self.record(f"{path} client CPU per connection{label} (µs)", k, cpu)
                log(f"  {path} latency{label} {k}: p50 {p50:.0f} µs p99 {p99:.0f} µs, "
                    f"client CPU {cpu:.0f} µs per connection")

    def memory(self):
        a = self.args
        kinds = self.kinds(["warren", "ssh"])
        counts = [1000] if a.quick else [1000, 10000]
        for n in counts:
            for rep in range(a.reps):
                for k in self.turns(kinds, rep):
                    c = self.start(k, forwards=("L_echo",))
                    echo_once(c.ports["L_echo"])
                    time.sleep(1.0)
                    idle = rss_kib(c.pid)
                    t0 = time.perf_counter()
                    held, failed, rss, again_failed, after = asyncio.run(
                        hold_many(c.ports["L_echo"], n, lambda: rss_kib(c.pid)))
                    took = time.perf_counter() - t0
                    per = (rss - idle) / n
                    if n == counts[0]:
                        self.record("RSS idle (MiB)", k, idle / 1024)
                    self.record(f"RSS per idle connection, {n} held (KiB)", k, per)
                    self.record(f"RSS after closing {n} (MiB)", k, after / 1024)
                    if failed or again_failed:
                        self.notes.append(f"{k}: {failed} of {n} connections failed to open, "
                                          f"{again_failed} failed the second echo")
                    log(f"  memory {k} n={n}: idle {idle} KiB, with {held} held {rss} KiB "
                        f"({per:.1f} KiB each), after close {after} KiB; "
                        f"{failed}+{again_failed} failed; open+echo+hold took {took:.1f} s")
                    self.stop(c.proc)

    def cold_start(self):
        a = self.args
        kinds = self.kinds(["warren", "ssh"])
        for rep in range(max(a.reps, 5)):
            for k in self.turns(kinds, rep):
                c = self.start(k, forwards=("L_echo",), ready=False)
                port = c.ports["L_echo"]
                bound = echoed = None
                deadline = time.perf_counter() + 20
                while echoed is None and time.perf_counter() < deadline:
                    try:
                        s = socket.create_connection((LOOP, port), 5)
                    except OSError:
                        time.sleep(0.0005)
                        continue
                    if bound is None:
                        bound = time.perf_counter() - c.started
                    try:
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        s.sendall(b"x")
                        recv_exact(s, 1)
                        echoed = time.perf_counter() - c.started
                    except OSError:
                        pass
                    finally:
                        s.close()
                if echoed is None:
                    raise Failed(f"cold start {k}: no echo: {c.log_text()[-1000:]}")
                self.record("start to ingress accepting (ms)", k, bound * 1e3)
                self.record("start to first byte echoed (ms)", k, echoed * 1e3)
                log(f"  cold start {k}: bound {bound * 1e3:.1f} ms, echo {echoed * 1e3:.1f} ms")
                self.stop(c.proc)

    def recovery(self):
        a = self.args
        variants = [("warren", None), ("autossh", None)]
        if a.reconnect_min:
            variants.insert(1, ("warren", a.reconnect_min))
        if a.before:
            variants.insert(1, ("before", None))
        variants = [v for v in variants if v[0] in a.clients or v[0] == "before"]
        for mode in ("kill", "freeze"):
            for rep in range(a.reps):
                for kind, rmin in self.turns(variants, rep):
                    label = kind if kind in ("autossh", "before") else f"warren reconnect_min={rmin or '1s (default)'}"
                    c = self.start(kind, forwards=("L_echo",), keepalive=(1, 2),
                                   reconnect_min=rmin)
                    time.sleep(0.5)
                    echo_once(c.ports["L_echo"])
                    if mode == "freeze":
                        # A freeze comes at any moment of the keepalive cycle: warren counts
                        # silence from the last packet received, ssh checks on a fixed beat
                        # from its start. Each repetition freezes at another point of the
                        # 1 s interval after the echo, the same for every client.
                        time.sleep((rep + 0.5) / a.reps)
                    pids = self.server_pids(c)
                    if not pids:
                        raise Failed(f"recovery: no sshd process found for {kind}")
                    t0 = time.perf_counter()
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
                    took = asyncio.run(probe_until_echo(c.ports["L_echo"], t0))
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    fig = ("recovery after the session is killed (s)" if mode == "kill"
                           else "recovery after the session is frozen (s)")
                    self.record(fig, label, took)
                    log(f"  recovery {mode} {label}: {took:.3f} s")
                    self.stop(c.proc)

    # -- report --------------------------------------------------------------------------

    def report(self, header):
        out = list(header)
        if self.results:
            out.append("")
            out.extend(self.main_table())
        if self.cipher_results:
            out.append("")
            out.extend(self.cipher_table())
        if self.scrape_results:
            out.append("")
            out.extend(self.scrape_table())
        if self.notes:
            out.append("")
            out.extend(f"- note: {n}" for n in self.notes)
        return "\n".join(out)

    def cipher_table(self):
        """One row per cipher: -L one stream up and down, each client's Gbit/s and the ratio
        warren/ssh of the medians; then the same for the client's CPU seconds per GiB."""
        kinds = self.kinds(["warren", "ssh"])
        names = {"warren": "warren", "ssh": "ssh -c", "before": "warren before"}
        out = []
        for fig, title, digits in (("gbit", "Gbit/s", 2), ("cpu", "client CPU per GiB (s)", 3)):
            cols = []
            for d in ("up", "down"):
                cols += [f"-L {d}, {names[k]}" for k in kinds] + [f"{d} warren/ssh"]
            mac = " | MAC (warren, ssh)" if fig == "gbit" else ""
            out.append(f"| cipher, {title}{mac} | " + " | ".join(cols) + " |")
            out.append("|---" * (len(cols) + 1 + (1 if mac else 0)) + "|")
            for cipher, per in self.cipher_results.items():
                row = [cipher]
                if mac:
                    row.append(", ".join(self.cipher_macs.get((cipher, k), "?") for k in kinds))
                for d in ("up", "down"):
                    row += [cell(per.get((d, fig, k)), digits) for k in kinds]
                    row.append(ratio(per.get((d, fig, "warren")), per.get((d, fig, "ssh"))))
                out.append("| " + " | ".join(row) + " |")
            out.append("")
        return out[:-1]

    def scrape_table(self):
        """-L one stream up and down, without and with the scraper: Gbit/s and warren's CPU
        per GiB, the ratio scraped/unscraped of the medians and of each repetition's pair;
        then the scrapes: how many, how often, how long."""
        every = f"{self.args.scrape_every * 1e3:g} ms"
        out = [f"| -L one stream, warren with metrics_listen | no scraper "
               f"| GET /metrics every {every} | scraped/not (medians) "
               "| scraped/not, each repetition: median (min–max) |",
               "|---|---|---|---|---|"]
        for fig, title, digits in (("gbit", "Gbit/s", 2), ("cpu", "warren CPU per GiB (s)", 3)):
            for d in ("up", "down"):
                none = self.scrape_results.get((d, fig, "none"))
                scraped = self.scrape_results.get((d, fig, "scrape"))
                pairs = self.scrape_pairs.get((d, fig))
                rel = (f"{statistics.median(scraped) / statistics.median(none):.3f}"
                       if none and scraped else "—")
                out.append(f"| {d}, {title} | {cell(none, digits)} | {cell(scraped, digits)} "
                           f"| {rel} | {cell(pairs, 3)} |")
        s = self.scrapes
        if s and s.latencies:
            lat = [x * 1e3 for x in s.latencies]
            out.append("")
            out.append(f"scrapes: {len(lat)} in {s.elapsed:.0f} s of scraped runs "
                       f"({len(lat) / max(s.elapsed, 1e-9):.1f} per s), {len(s.errors)} failed; "
                       f"each a new connection, status 200 and warren_forward_bytes_total "
                       f"checked; latency mean {statistics.mean(lat):.2f} ms, "
                       f"p50 {pct(lat, 50):.2f}, p99 {pct(lat, 99):.2f}, max {max(lat):.2f}; "
                       f"body {statistics.median(s.sizes):.0f} bytes")
        if self.scrape_cpu:
            per, n = self.scrape_cpu
            line = (f"warren CPU per scrape without traffic: {per * 1e6:.0f} µs ({n} scrapes "
                    f"back to back; /proc, 10 ms ticks), {per / self.args.scrape_every * 1e3:.2f}"
                    f" ms of CPU per s at one scrape every {every}")
            shares = []
            for d in ("up", "down"):
                g = self.scrape_results.get((d, "gbit", "none"))
                cp = self.scrape_results.get((d, "cpu", "none"))
                if g and cp:
                    # warren's CPU seconds per second while forwarding at the median rate
                    busy = statistics.median(cp) * statistics.median(g) * 1e9 / 8 / 2**30
                    shares.append(f"{d} {per / self.args.scrape_every / busy * 100:.3f} %")
            if shares:
                line += ("; against warren's CPU while forwarding unscraped (median Gbit/s x "
                         "CPU per GiB): " + ", ".join(shares))
            out.append("")
            out.append(line)
        return out

    def main_table(self):
        out = []
        before = bool(self.args.before)
        out.append("| figure | warren | OpenSSH (default cipher) | warren/OpenSSH "
                   f"| OpenSSH -c {AES} | warren/OpenSSH-aes |"
                   + (" warren before | warren/before |" if before else ""))
        out.append("|---|---|---|---|---|---|" + ("---|---|" if before else ""))
        for fig, per in self.results.items():
            unit = fig.rsplit("(", 1)[-1].rstrip(")")
            digits = {"Gbit/s": 2, "µs": 0, "ms": 1, "KiB": 1, "MiB": 2, "s": 3}.get(unit, 2)
            if "recovery" in fig:
                for wk in [k for k in per if k.startswith("warren") or k == "before"]:
                    out.append(f"| {fig}: {wk} vs autossh -M 0 | {cell(per[wk], digits)} | "
                               f"{cell(per.get('autossh'), digits)} | "
                               f"{ratio(per[wk], per.get('autossh'))} | — | — |")
                continue
            out.append(f"| {fig} | {cell(per.get('warren'), digits)} | "
                       f"{cell(per.get('ssh'), digits)} | "
                       f"{ratio(per.get('warren'), per.get('ssh'))} | "
                       f"{cell(per.get('ssh-aes'), digits)} | "
                       f"{ratio(per.get('warren'), per.get('ssh-aes'))} |"
                       + (f" {cell(per.get('before'), digits)} | "
                          f"{ratio(per.get('warren'), per.get('before'))} |" if before else ""))
        return out


def cell(vals, digits):
    """Median (min–max) of `vals`."""
    if not vals:
        return "—"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def ratio(a, b):
    """Ratio of the medians of `a` and `b`."""
    if not a or not b:
        return "—"
    mb = statistics.median(b)
    return f"{statistics.median(a) / mb:.2f}" if mb else "—"


# ---------------------------------------------------------------------------------------
# measurement primitives


def echo_once(port, socks=None, timeout=5.0):
    """New connection, (SOCKS5 CONNECT to the echo server), 1 byte echoed, close: seconds."""
    t0 = time.perf_counter()
    s = socket.create_connection((LOOP, port), timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if socks:
            s.sendall(b"\x05\x01\x00")
            if recv_exact(s, 2) != b"\x05\x00":
                raise ConnectionError("socks method refused")
            s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(LOOP) + socks.to_bytes(2, "big"))
            r = recv_exact(s, 10)
            if r[1] != 0:
                raise ConnectionError(f"socks reply {r[1]}")
        s.sendall(b"x")
        if recv_exact(s, 1) != b"x":
            raise ConnectionError("bad echo")
    finally:
        s.close()
    return time.perf_counter() - t0


def scrape_once(port, want=b"warren_forward_bytes_total", timeout=5.0):
    """One `GET /metrics` on a new connection, the whole body read: (seconds, body bytes).
    Raises unless the answer is 200 and its body names `want`."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(LOOP, port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    took = time.perf_counter() - t0
    if r.status != 200 or want not in body:
        raise ConnectionError(f"GET /metrics: {r.status}, {len(body)} bytes without {want!r}")
    return took, len(body)


class Scraper(threading.Thread):
    """`scrape_once` every `every` s on a fixed beat (as Prometheus does; a beat missed
    while a scrape took longer is skipped) from `start()` to `stop()`."""

    def __init__(self, port, every):
        super().__init__(daemon=True)
        self.port, self.every = port, every
        self.stopping = threading.Event()
        self.latencies, self.sizes, self.errors = [], [], []
        self.elapsed = 0.0

    def run(self):
        t0 = beat = time.perf_counter()
        while not self.stopping.is_set():
            try:
                took, size = scrape_once(self.port)
                self.latencies.append(took)
                self.sizes.append(size)
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(str(e))
            now = time.perf_counter()
            beat = max(beat + self.every, now)
            self.stopping.wait(beat - now)
        self.elapsed = time.perf_counter() - t0

    def stop(self):
        self.stopping.set()
        self.join()

    def add(self, other):
        """Adds another (stopped) scraper's counts to these."""
        self.latencies += other.latencies
        self.sizes += other.sizes
        self.errors += other.errors
        self.elapsed += other.elapsed


def iperf(port, seconds, reverse=False, parallel=1):
    cmd = ["iperf3", "-c", LOOP, "-p", str(port), "-t", str(seconds), "-O", "1", "-J"]
    if reverse:
        cmd.append("-R")
    if parallel > 1:
        cmd += ["-P", str(parallel)]
    for attempt in range(3):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        try:
            j = json.loads(r.stdout)
            if "error" not in j:
                moved = sum(i["sum"]["bytes"] for i in j["intervals"])
                return j["end"]["sum_received"]["bits_per_second"], moved
            err = j["error"]
        except ValueError:
            err = r.stdout[-300:] + r.stderr[-300:]
        log(f"  iperf3 failed ({err}); retrying")
        time.sleep(1)
    raise Failed(f"iperf3 through port {port} failed: {err}")


def http_get(socks_port, http_port, mib):
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "--socks5-hostname",
                        f"{LOOP}:{socks_port}", f"http://{LOOP}:{http_port}/big.bin",
                        "-w", "%{size_download} %{time_total} %{time_starttransfer}"],
                       capture_output=True, text=True, timeout=300)
    size, total, first = r.stdout.split()
    if int(size) != mib * 1024 * 1024:
        raise Failed(f"HTTP download got {size} bytes: {r.stderr}")
    return int(size) * 8 / (float(total) - float(first)), int(size)


def hold_open(port, n):
    """Opens n connections through `port`, one at a time, each echoing one byte; returns
    those that worked (the caller closes them)."""
    held = []
    for _ in range(n):
        try:
            s = socket.create_connection((LOOP, port), 10)
        except OSError:
            continue
        try:
            s.sendall(b"x")
            if recv_exact(s, 1) == b"x":
                held.append(s)
                continue
        except OSError:
            pass
        s.close()
    return held


async def hold_many(port, n, rss, concurrency=64):
    """Opens n connections through `port` (each echoes one byte), holds them, reads `rss()`,
    echoes once more on every one, closes them all and reads `rss()` again."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)

    async def one():
        async with sem:
            s = socket.socket()
            s.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(s, (LOOP, port)), 30)
                await loop.sock_sendall(s, b"x")
                d = await asyncio.wait_for(loop.sock_recv(s, 1), 30)
                if d != b"x":
                    raise ConnectionError("no echo")
                return s
            except BaseException:
                s.close()
                raise

    got = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    socks = [s for s in got if isinstance(s, socket.socket)]
    failed = n - len(socks)
    await asyncio.sleep(1.0)
    rss_held = rss()

    async def again(s):
        async with sem:
            await loop.sock_sendall(s, b"y")
            d = await asyncio.wait_for(loop.sock_recv(s, 1), 30)
            if d != b"y":
                raise ConnectionError("no echo")

    res = await asyncio.gather(*(again(s) for s in socks), return_exceptions=True)
    again_failed = sum(1 for r in res if isinstance(r, BaseException))
    for s in socks:
        s.close()
    await asyncio.sleep(2.0)
    return len(socks), failed, rss_held, again_failed, rss()


async def probe_until_echo(port, t0, every=0.02, limit=60.0):
    """Starts a new connection+echo attempt every `every` s; the time from t0 to the first
    echo."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    async def attempt():
        s = socket.socket()
        s.setblocking(False)
        try:
            await loop.sock_connect(s, (LOOP, port))
            await loop.sock_sendall(s, b"x")
            d = await asyncio.wait_for(loop.sock_recv(s, 1), 20)
            if d == b"x" and not done.done():
                done.set_result(time.perf_counter() - t0)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            s.close()

    tasks = []
    while not done.done():
        if time.perf_counter() - t0 > limit:
            raise Failed(f"no echo through port {port} within {limit} s")
        tasks.append(asyncio.ensure_future(attempt()))
        try:
            await asyncio.wait_for(asyncio.shield(done), every)
        except asyncio.TimeoutError:
            pass
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return done.result()


# ---------------------------------------------------------------------------------------


def version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def machine():
    model, flags = "?", ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    aes = "yes" if re.search(r"\baes\b", flags) else "no"
    return f"{os.cpu_count()} CPUs, {model}, AES instructions: {aes}, Linux {platform.release()}"


def quiet_enough(max_load, max_busy, wait):
    """Waits (up to `wait` s) until the machine is quiet: the 1-minute load under `max_load`
    and the CPUs less than `max_busy` busy over a 1 s sample (the load average lags and
    counts sleeping D-state tasks, so a busy-but-idle machine passes on the CPU sample
    alone). Returns a line describing the load when measuring starts."""
    t0 = time.time()
    while True:
        la = loadavg()
        busy = cpu_busy(1.0)
        if busy < max_busy and (la <= max_load or busy < max_busy / 2):
            return f"before start: load {la:.2f} (1 min), CPUs {busy * 100:.0f}% busy"
        if time.time() - t0 >= wait:
            msg = (f"WARNING: machine busy before start: load {la:.2f} (1 min), CPUs "
                   f"{busy * 100:.0f}% busy; figures will be noisy")
            log(msg)
            return msg
        log(f"load {la:.2f}, CPUs {busy * 100:.0f}% busy: waiting for a quieter machine")
        time.sleep(5)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warren", default="target/release/warren")
    ap.add_argument("--quick", action="store_true",
                    help="1 repetition, 2 s iperf3 runs, 200 latency iterations, "
                         "1 000 connections only")
    ap.add_argument("--reps", type=int, help="repetitions of each figure (default 3)")
    ap.add_argument("--seconds", type=int, help="iperf3 duration (default 5)")
    ap.add_argument("--iterations", type=int,
                    help="connect+echo iterations per latency figure (default 1000)")
    ap.add_argument("--http-mib", type=int, help="size of the HTTP download (default 2048)")
    ap.add_argument("--only", default="throughput,latency,memory,cold,recovery,rtt",
                    help="comma-separated figure groups to run (default: all but ciphers and "
                         "scrape; rtt only with --rtt; ciphers: -L one stream up and down per "
                         "cipher; scrape: -L one stream up and down without and with a "
                         "scraper of warren's metrics_listen)")
    ap.add_argument("--ciphers", default=",".join(CIPHERS),
                    help="the ciphers of the ciphers group (default: warren's default list)")
    ap.add_argument("--ssh-mac", help="ssh's MAC in the ciphers group (-m; default: ssh's own "
                    "choice, umac-64-etm@openssh.com with a CTR cipher)")
    ap.add_argument("--scrape-every", type=float, default=0.1,
                    help="seconds between two GET /metrics of the scrape group (default 0.1)")
    ap.add_argument("--rtt", type=int, default=20,
                    help="round-trip time in ms of the delayed link of the rtt group "
                         "(default 20; 0 skips the group)")
    ap.add_argument("--clients", default="warren,ssh,ssh-aes,autossh",
                    help="which clients to measure (for development; default all)")
    ap.add_argument("--before", help="a second warren binary (an older build) measured "
                    "alongside, for before/after figures of a change")
    ap.add_argument("--before-env", action="append", metavar="NAME=VALUE",
                    help="environment of the --before warren (e.g. TOKIO_WORKER_THREADS=1)")
    ap.add_argument("--warren-log", help="warren's --log-level (for development)")
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep the temp dir with every log (for development)")
    ap.add_argument("--reconnect-min", default="100ms",
                    help="also measure warren's recovery with this reconnect_min "
                         "('' to skip; the default 1s is always measured)")
    ap.add_argument("--max-load", type=float, default=0.5,
                    help="1-minute load average under which to start (default 0.5)")
    ap.add_argument("--max-busy", type=float, default=0.2,
                    help="share of CPU time used by others under which to start (default 0.2)")
    ap.add_argument("--wait-load", type=float, default=60.0,
                    help="seconds to wait for the load to drop before starting anyway")
    ap.add_argument("--max-sessions", type=int, default=20000)
    ap.add_argument("--out", help="also write the report to this file")
    ap.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--http-server", help=argparse.SUPPRESS)
    ap.add_argument("--delay-proxy", nargs=2, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.echo_server:
        return echo_server()
    if a.http_server:
        return http_server(a.http_server)
    if a.delay_proxy:
        return delay_proxy(*a.delay_proxy)
    a.reps = a.reps or (1 if a.quick else 3)
    a.seconds = a.seconds or (2 if a.quick else 5)
    a.iterations = a.iterations or (200 if a.quick else 1000)
    a.http_mib = a.http_mib or (512 if a.quick else 2048)
    a.warren = os.path.abspath(a.warren)
    a.before = a.before and os.path.abspath(a.before)
    a.clients = a.clients.split(",")
    a.ciphers = [c.strip() for c in a.ciphers.split(",") if c.strip()]
    groups = [g.strip() for g in a.only.split(",") if g.strip()]
    if not a.rtt:
        groups = [g for g in groups if g != "rtt"]

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    b = Bench(a)
    try:
        load_line = quiet_enough(a.max_load, a.max_busy, a.wait_load)
        b.setup()
        started = time.time()
        for g in groups:
            busy = cpu_busy(1.0)
            log(f"== {g} (load {loadavg():.2f}, CPUs {busy * 100:.0f}% busy)")
            if busy > a.max_busy:
                log(f"WARNING: CPUs {busy * 100:.0f}% busy before {g}: noisy figures")
            b.loads.append((g, loadavg(), busy))
            {"throughput": b.throughput, "latency": b.latency, "memory": b.memory,
             "cold": b.cold_start, "recovery": b.recovery, "rtt": b.rtt,
             "ciphers": b.cipher_group, "scrape": b.scrape_group}[g]()
        header = [
            f"command: bench/run.sh {' '.join(sys.argv[1:])}".rstrip(),
            f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, took {time.time() - started:.0f} s",
            f"machine: {machine()}",
            f"versions: {version(['ssh', '-V'])}; {version([a.warren, '--version'])}; "
            f"{version(['iperf3', '--version'])}; {version(['autossh', '-V'])}; "
            f"{version(['curl', '--version'])[:40]}",
            "negotiated ciphers (sshd log, kex: client->server cipher): "
            + (", ".join(f"{k} {v}" for k, v in b.ciphers.items())
               or ("each row's, checked; MACs in the table" if b.cipher_results
                   else "not measured"))
            + (f"; ssh -m {a.ssh_mac} in the ciphers group" if a.ssh_mac else ""),
            f"repetitions: {a.reps} (median, then min–max), iperf3 {a.seconds} s each, "
            f"latency {a.iterations} iterations each; clients take turns in rotating order",
            load_line + "; before each group (load, CPUs busy while idle): "
            + ", ".join(f"{g} {la:.2f} {bz * 100:.0f}%" for g, la, bz in b.loads)
            + f"; load at end {loadavg():.2f}",
            f"RLIMIT_NOFILE {b.nofile}; sshd MaxSessions {a.max_sessions}; "
            "recovery with keepalive 1 s x 2 (warren keepalive_interval/keepalive_count_max, "
            "ssh ServerAliveInterval/ServerAliveCountMax), autossh -M 0 AUTOSSH_GATETIME=0",
        ]
        text = b.report(header)
        print(text)
        if a.out:
            with open(a.out, "w") as f:
                f.write(text + "\n")
    except Failed as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
