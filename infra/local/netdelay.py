#!/usr/bin/env python3
"""Delays (and optionally drops) packets queued by netfilter's NFQUEUE, for kernels built
without tc's netem qdisc.

`fleet.sh fault` runs it inside one namespace with an iptables rule such as
`iptables -A OUTPUT -o eth0 -j NFQUEUE --queue-num 0`: every packet leaving that
host waits here for DELAY_MS, in order, and LOSS_PCT percent of them are dropped, which is what
`tc qdisc add dev eth0 root netem delay 100ms loss 10%` does on the same interface. Only packet
metadata is copied to user space (a verdict needs the id, not the payload).

It fails closed: the rule has no --queue-bypass and the queue no fail-open flag, so when this
helper dies or falls behind the kernel drops the packets instead of letting them through
untouched (a fault that silently is not there would make the chaos checks pass for nothing).

Usage: netdelay.py QUEUE_NUM DELAY_MS [LOSS_PCT]

Python standard library only: nfnetlink_queue spoken over a raw netlink socket.
"""

import collections
import errno
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NF_DROP = 0
NF_ACCEPT = 1


def attr(kind, payload):
    pad = (4 - len(payload) % 4) % 4
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * pad


def message(kind, flags, seq, family, queue, attrs):
    body = struct.pack("=BBH", family, 0, socket.htons(queue)) + attrs
    header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0)
    return header + body


def configure(sock, queue):
    """Binds the queue and asks for metadata only. No fail-open: a full queue drops packets."""
    requests = [
        attr(NFQA_CFG_CMD, struct.pack(">BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_INET)),
        attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META))
        + attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", 8192)),
    ]
    for seq, attrs in enumerate(requests, start=1):
        sock.send(message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, socket.AF_UNSPEC, queue, attrs))
        reply = sock.recv(4096)
        _, kind, _, _, _ = struct.unpack_from("=IHHII", reply)
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", reply, 16)
            if code != 0:
                raise OSError(-code, f"nfqueue config step {seq}: {errno.errorcode.get(-code, code)}")


def packet_ids(data):
    """Yields (queue, packet id) for every queued packet in one netlink read."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _, _, _ = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            return
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            (queue,) = struct.unpack_from(">H", data, offset + 18)
            pos = offset + 20
            while pos + 4 <= offset + length:
                alen, akind = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                if akind & 0x7FFF == NFQA_PACKET_HDR:
                    (packet_id,) = struct.unpack_from(">I", data, pos + 4)
                    yield queue, packet_id
                pos += (alen + 3) & ~3
        offset += (length + 3) & ~3


def verdict(sock, queue, packet_id, accept):
    hdr = attr(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT if accept else NF_DROP, packet_id))
    sock.send(message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, socket.AF_UNSPEC, queue, hdr))


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    queue = int(sys.argv[1])
    delay = int(sys.argv[2]) / 1000
    loss = float(sys.argv[3]) / 100 if len(sys.argv) == 4 else 0.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: root may exceed rmem_max
    sock.bind((0, 0))
    configure(sock, queue)
    print(f"netdelay: queue {queue}, delay {delay * 1000:.0f} ms, loss {loss * 100:.0f}%", flush=True)

    held = collections.deque()  # (release time, queue, packet id), oldest first
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            try:
                data = sock.recv(1 << 20)
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # fell behind; the kernel keeps the packets
                    continue
                raise
            now = time.monotonic()
            for q, packet_id in packet_ids(data):
                if loss and random.random() < loss:
                    verdict(sock, q, packet_id, accept=False)
                else:
                    held.append((now + delay, q, packet_id))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, q, packet_id = held.popleft()
            verdict(sock, q, packet_id, accept=True)


if __name__ == "__main__":
    main()
