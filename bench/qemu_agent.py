#!/usr/bin/python3
"""Helpers for bench/restore_compare.sh: talk to a QEMU VM that runs our guest.

  qemu_agent.py ping SOCKET [COMMON] [--interval-ms N] [--after-ready] [--verbose]
  qemu_agent.py qmp SOCKET [COMMON] COMMAND...
  COMMON: [--timeout-ms N] [--pid PID | --pid-file FILE] [--started FILE]

A benchmark helper, not a test. Standard library only, so it runs with the
system python3 wherever the script runs (also inside scripts/with-kvm), with
no build step. The machine has neither socat nor nc.

ping: waits until the forkvm guest agent behind the Unix socket SOCKET (QEMU's
COM2 as `-chardev socket,id=agent,path=SOCKET,server=on,wait=off`) answers a
Ping frame: the benchmark's definition of "ready", the same as forkvm's
`bench fork` (docs/agent-protocol.md: Ping = type 2, payload u64 nonce;
Pong = type 3, payload u64 nonce, u64 monotonic_ns). Connects (retrying until
the socket exists), sends a Ping every --interval-ms until a Pong echoing one
of the nonces sent arrives. Pings are repeated because bytes sent too early
are lost (before the agent opened its port; while QEMU loads an incoming
migration, whose UART state replaces what was received). A new Ping goes out
only once QEMU has taken the previous one from the socket (SIOCOUTQ), so a
guest that is paused or not reading never gets a backlog. Other frames (the
agent's Ready, Pongs for old nonces) and line noise are skipped.
--after-ready sends the first Ping only once the agent's Ready frame has
arrived (for a fresh boot): under nested KVM, a Ping sent while the guest
kernel boots can stall QEMU's COM2 input for good (seen with microvm, pc and
kernel-irqchip=split; the agent then never sees a byte). With --pid
(QEMU's) it gives up as soon as that process has exited. Prints on success
  pong elapsed_ms=<since start> pings=<sent> realtime_us=<CLOCK_REALTIME at the Pong>
(realtime_us lets the shell script use the Pong's arrival, not our exit).

qmp: runs QMP commands in order (each a JSON object, or the word
`wait-migration`, which polls query-migrate until the migration completed)
and prints each return value as one JSON line. Fails on an error reply or a
failed migration.

--pid-file FILE: QEMU's PID is read from FILE once it exists (the helper can
then be started before QEMU). --started FILE: FILE is created once the helper
has started and is about to connect, so that a benchmark can start its clock
and QEMU after the interpreter's start-up, which is slow in an emulated host
and would otherwise be counted as QEMU's time.

Exit status: 0 success, 1 failure or timeout, 2 bad usage.
"""

import argparse
import errno
import fcntl
import json
import os
import select
import socket
import struct
import sys
import termios
import time
import zlib

MAGIC = b"FKVM"
HEADER = struct.Struct("<4sBBHIII")  # magic, version, type, flags, request_id, payload_len, crc32
VERSION = 1
TYPE_READY = 1
TYPE_PING = 2
TYPE_PONG = 3
MAX_PAYLOAD = 64 * 1024  # the agent's frames to the host here are small (Ready, Pong)
NONCE_BASE = 0xF0C0_0000_0000_0000


class Failure(Exception):
    pass


def encode_frame(msg_type, request_id, payload):
    head = struct.pack("<4sBBHII", MAGIC, VERSION, msg_type, 0, request_id, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head)) & 0xFFFFFFFF
    return head + struct.pack("<I", crc) + payload


class FrameScanner:
    """Finds valid frames in a byte stream; skips anything that is not one."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        frames = []
        while True:
            at = self.buf.find(MAGIC)
            if at < 0:
                # Keep a tail that could be the start of the magic.
                del self.buf[: max(0, len(self.buf) - 3)]
                return frames
            del self.buf[:at]
            if len(self.buf) < HEADER.size:
                return frames
            _, version, msg_type, flags, request_id, length, crc = HEADER.unpack_from(self.buf)
            if version != VERSION or flags != 0 or length > MAX_PAYLOAD:
                del self.buf[:1]  # not a frame start: look for the next magic
                continue
            if len(self.buf) < HEADER.size + length:
                return frames
            payload = bytes(self.buf[HEADER.size : HEADER.size + length])
            if zlib.crc32(payload, zlib.crc32(bytes(self.buf[:16]))) & 0xFFFFFFFF != crc:
                del self.buf[:1]
                continue
            del self.buf[: HEADER.size + length]
            frames.append((msg_type, request_id, payload))


def alive(pid):
    if isinstance(pid, str):  # --pid-file: not written yet = QEMU not started yet
        try:
            with open(pid) as f:
                pid = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return True
    if pid <= 0:
        return True
    try:
        # A zombie still answers kill(0); its /proc stat says Z.
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def connect(path, deadline, pid):
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.setblocking(False)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
        if not alive(pid):
            raise Failure("the VMM has exited")
        if time.monotonic() >= deadline:
            raise Failure(f"cannot connect to {path}")
        time.sleep(0.005)


def unsent(sock):
    try:
        return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0  # unknown: send anyway


def cmd_ping(a):
    start = time.monotonic()
    deadline = start + a.timeout_ms / 1000
    sent = 0
    nonces = set()
    seen_ready = not a.after_ready

    def log(msg):
        if a.verbose:
            print(f"qemu_agent ping: {(time.monotonic() - start) * 1000:.1f} ms: {msg}", file=sys.stderr)

    while time.monotonic() < deadline:
        sock = connect(a.socket, deadline, a.pid)
        scanner = FrameScanner()
        closed = False
        while not closed and time.monotonic() < deadline:
            if seen_ready and unsent(sock) == 0:
                nonce = NONCE_BASE + sent
                sent += 1
                nonces.add(nonce)
                try:
                    sock.sendall(encode_frame(TYPE_PING, sent, struct.pack("<Q", nonce)))
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
            next_ping = min(time.monotonic() + a.interval_ms / 1000, deadline)
            while time.monotonic() < next_ping:
                ready, _, _ = select.select([sock], [], [], max(0.0, next_ping - time.monotonic()))
                if not ready:
                    break
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed = True
                    break
                for msg_type, request_id, payload in scanner.feed(data):
                    log(f"frame type {msg_type}, request {request_id}, {len(payload)} payload bytes")
                    if msg_type == TYPE_READY:
                        seen_ready = True
                    if msg_type == TYPE_PONG and len(payload) == 16:
                        nonce, _ = struct.unpack("<QQ", payload)
                        if nonce in nonces:
                            print(
                                f"pong elapsed_ms={(time.monotonic() - start) * 1000:.1f} pings={sent} "
                                f"realtime_us={time.time_ns() // 1000}",
                                flush=True,
                            )
                            sock.close()
                            return 0
            if not alive(a.pid):
                raise Failure("the VMM has exited")
        sock.close()
        log("connection closed, reconnecting")
    raise Failure(f"timed out ({sent} pings sent)")


class Qmp:
    def __init__(self, path, deadline, pid):
        self.deadline = deadline
        self.pid = pid
        self.sock = connect(path, deadline, pid)
        self.buf = b""
        self.read_message()  # greeting
        self.execute({"execute": "qmp_capabilities"})

    def read_message(self):
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise Failure("QMP timed out")
            ready, _, _ = select.select([self.sock], [], [], min(left, 0.5))
            if not ready:
                if not alive(self.pid):
                    raise Failure("the VMM has exited")
                continue
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise Failure("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd):
        self.sock.setblocking(True)
        self.sock.sendall(json.dumps(cmd).encode() + b"\n")
        self.sock.setblocking(False)
        while True:
            msg = self.read_message()
            if "event" in msg:
                continue
            if "error" in msg:
                raise Failure(f"{cmd.get('execute')}: {msg['error']}")
            return msg.get("return")


def cmd_qmp(a):
    deadline = time.monotonic() + a.timeout_ms / 1000
    qmp = Qmp(a.socket, deadline, a.pid)
    for c in a.commands:
        if c == "wait-migration":
            while True:
                r = qmp.execute({"execute": "query-migrate"})
                status = (r or {}).get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled"):
                    raise Failure(f"migration {status}: {r.get('error-desc', '')}")
                if time.monotonic() >= deadline:
                    raise Failure(f"migration still {status}")
                time.sleep(0.02)
        else:
            try:
                cmd = json.loads(c)
            except json.JSONDecodeError as e:
                raise Failure(f"not JSON: {c}: {e}")
            if cmd.get("execute") == "quit":
                # QEMU may close the socket before or after answering.
                try:
                    r = qmp.execute(cmd)
                except Failure as e:
                    if "closed" not in str(e):
                        raise
                    r = {}
            else:
                r = qmp.execute(cmd)
        print(json.dumps(r), flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ping = sub.add_parser("ping")
    ping.add_argument("socket")
    ping.add_argument("--timeout-ms", type=int, default=60000)
    ping.add_argument("--interval-ms", type=int, default=100)
    ping.add_argument("--pid", type=int, default=0)
    ping.add_argument("--pid-file")
    ping.add_argument("--started")
    ping.add_argument("--after-ready", action="store_true")
    ping.add_argument("--verbose", action="store_true")
    qmp = sub.add_parser("qmp")
    qmp.add_argument("socket")
    qmp.add_argument("--timeout-ms", type=int, default=60000)
    qmp.add_argument("--pid", type=int, default=0)
    qmp.add_argument("--pid-file")
    qmp.add_argument("--started")
    qmp.add_argument("commands", nargs="+")
    a = p.parse_args()
    for name in ("timeout_ms", "interval_ms"):
        if getattr(a, name, 1) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if a.pid_file:
        a.pid = a.pid_file
    if a.started:
        with open(a.started, "w"):
            pass
    try:
        return cmd_ping(a) if a.cmd == "ping" else cmd_qmp(a)
    except Failure as e:
        print(f"qemu_agent {a.cmd}: {a.socket}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"qemu_agent {a.cmd}: {a.socket}: {os.strerror(e.errno or errno.EIO)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
