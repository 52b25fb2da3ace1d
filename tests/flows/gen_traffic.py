#!/usr/bin/python3
"""Deterministic ~200-packet traffic capture for feeding a real exporter (softflowd -r).

Usage:  /usr/bin/python3 tests/flows/gen_traffic.py OUT.pcap

Ethernet frames between 10.1.0.0/24 hosts, fixed timestamps from 1700000000.0, six
conversations (each becomes one bidirectional softflowd flow = two v9 records):
    TCP 10.1.0.10:51000 <-> 10.1.0.20:22    SSH, handshake, 30 data packets, FIN/FIN
    UDP 10.1.0.11:53001 <-> 10.1.0.53:53    10 DNS-sized query/response pairs
    TCP 10.1.0.12:51500 <-> 10.1.0.80:80    HTTP, handshake, request, 10-packet response, FIN
    TCP 10.1.0.13:52000 <-> 10.1.0.43:443   40 TLS-sized packets, FIN
    TCP 10.1.0.14:53000 <-> 10.1.0.52:5201  60 bulk packets, ends with RST
    UDP 10.1.0.15:40000  -> 10.1.0.52:5201  20 one-way datagrams
Per-conversation packet and byte totals are printed (and written to OUT.pcap.json).
"""

import json
import sys

from scapy.all import Ether, IP, TCP, UDP, Raw, wrpcap, conf

conf.verb = 0
T0 = 1_700_000_000.0


def mac(ip):
    return "02:00:0a:01:00:%02x" % int(ip.split(".")[-1])


class Conv:
    def __init__(self, name, proto, a, ap, b, bp):
        self.name, self.proto, self.a, self.ap, self.b, self.bp = name, proto, a, ap, b, bp
        self.seq = {True: 1000, False: 5000}
        self.stats = {"a_to_b": [0, 0], "b_to_a": [0, 0]}

    def pkt(self, fwd, size=0, flags="A"):
        src, sp, dst, dp = (self.a, self.ap, self.b, self.bp) if fwd else (self.b, self.bp, self.a, self.ap)
        payload = Raw(bytes((k * 13 + sp) & 0xff for k in range(size))) if size else b""
        ip = IP(src=src, dst=dst, ttl=64, id=(sum(self.stats["a_to_b"]) * 7 + size) & 0xffff)
        if self.proto == "tcp":
            l4 = TCP(sport=sp, dport=dp, flags=flags, seq=self.seq[fwd], ack=self.seq[not fwd], window=65535)
            self.seq[fwd] += size + (1 if any(f in flags for f in "SF") else 0)
        else:
            l4 = UDP(sport=sp, dport=dp)
        p = Ether(src=mac(src), dst=mac(dst)) / ip / l4 / payload
        st = self.stats["a_to_b" if fwd else "b_to_a"]
        st[0] += 1
        st[1] += len(p) - 14  # NetFlow counts IP bytes
        return p

    def handshake(self):
        return [self.pkt(True, 0, "S"), self.pkt(False, 0, "SA"), self.pkt(True, 0, "A")]

    def fin(self):
        return [self.pkt(True, 0, "FA"), self.pkt(False, 0, "FA"), self.pkt(True, 0, "A")]


def main():
    out = sys.argv[1]
    convs, streams = [], []

    c = Conv("ssh", "tcp", "10.1.0.10", 51000, "10.1.0.20", 22)
    s = c.handshake() + [c.pkt(i % 2 == 0, 48 + (i % 5) * 16, "PA") for i in range(30)] + c.fin()
    convs.append(c); streams.append(s)

    c = Conv("dns", "udp", "10.1.0.11", 53001, "10.1.0.53", 53)
    s = []
    for i in range(10):
        s += [c.pkt(True, 30 + i), c.pkt(False, 90 + 3 * i)]
    convs.append(c); streams.append(s)

    c = Conv("http", "tcp", "10.1.0.12", 51500, "10.1.0.80", 80)
    s = c.handshake() + [c.pkt(True, 180, "PA")] + [c.pkt(False, 1448, "A") for _ in range(10)] + [c.pkt(True, 0, "A")] + c.fin()
    convs.append(c); streams.append(s)

    c = Conv("https", "tcp", "10.1.0.13", 52000, "10.1.0.43", 443)
    s = c.handshake() + [c.pkt(i % 3 != 0, 100 + (i * 37) % 1300, "PA") for i in range(40)] + c.fin()
    convs.append(c); streams.append(s)

    c = Conv("iperf-tcp", "tcp", "10.1.0.14", 53000, "10.1.0.52", 5201)
    s = c.handshake() + [c.pkt(i % 6 != 5, 1448 if i % 6 != 5 else 0, "A") for i in range(60)] + [c.pkt(True, 0, "R")]
    convs.append(c); streams.append(s)

    c = Conv("iperf-udp", "udp", "10.1.0.15", 40000, "10.1.0.52", 5201)
    s = [c.pkt(True, 1200) for _ in range(20)]
    convs.append(c); streams.append(s)

    # interleave the conversations round-robin, 5 ms apart
    pkts, idx = [], [0] * len(streams)
    while any(idx[k] < len(streams[k]) for k in range(len(streams))):
        for k in range(len(streams)):
            if idx[k] < len(streams[k]):
                pkts.append(streams[k][idx[k]])
                idx[k] += 1
    for n, p in enumerate(pkts):
        p.time = T0 + n * 0.005
    wrpcap(out, pkts)
    summary = {c.name: {"proto": c.proto, "a": "%s:%d" % (c.a, c.ap), "b": "%s:%d" % (c.b, c.bp),
                        "a_to_b_packets_bytes": c.stats["a_to_b"],
                        "b_to_a_packets_bytes": c.stats["b_to_a"]} for c in convs}
    with open(out + ".json", "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    print("%d packets" % len(pkts))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
