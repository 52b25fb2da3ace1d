#!/usr/bin/python3
"""Deterministic flow-export pcaps for SOTP's flow decoders.

Usage:  /usr/bin/python3 tests/flows/gen_pcaps.py OUTDIR

Writes byte-identical files on every run (fixed seeds, fixed pcap timestamps, fixed IP ids).
Every pcap is linktype Ethernet (DLT_EN10MB, 1), all-zero MAC addresses (what Linux `lo`
uses, so `tcpreplay -i lo` works unchanged), IPv4 127.0.0.2 -> 127.0.0.1, UDP source port
50000 (sFlow: 50001), correct IPv4 and UDP checksums.  The flow payloads are assembled by
hand with struct.pack (scapy's NetFlow/sFlow layers are incomplete for options templates,
enterprise and variable-length IEs); scapy only supplies Ether/IP/UDP and the inner packets
of sFlow raw-header records.

Next to each pcap, `<name>.truth.json` lists what was encoded (headers, templates, every
record with its field values) so a test can compare a decoder with the generator as well as
with tshark (see tests/flows/ORACLE.md).

Files (dst port in brackets):

nfv5.pcap [2055]
    3 NetFlow v5 packets with 1, 17 and 30 records (48 records).  Protocols 6/17/1, varied
    addresses, ports (ICMP: dstport = type<<8|code), tcp_flags, ifIndexes, AS numbers,
    masks, next hops.  Packet 2 has sampling_interval 0x4064 = mode 1, interval 100; the
    others 0.  Header flow_sequence counts the flows of earlier packets.

nfv9.pcap [2055]  source id 7, 5 packets, 40 data records + 1 options data record
    pkt 1: template 256 (IPv4) + 10 data records of 256         -> template and data in one
    pkt 2: template 257 (IPv6, 8-byte counters) + options template 258 (scope System(1)
           4 bytes; SAMPLING_INTERVAL 34 4 bytes, SAMPLING_ALGORITHM 35 1 byte), no data
           (the options template flowset carries 2 bytes of padding)
    pkt 3: options data 258 (interval 512, algorithm 2; 9-byte record + 3 bytes padding)
           + 8 records of 257                                    -> template earlier packet
    pkt 4: 12 records of 256
    pkt 5: 6 records of 257 + 4 records of 256 (two data flowsets in one packet)
    Header count = number of records (template + options template + data) in the packet,
    sequence = packet number (0-based).

nfv9_sampler.pcap [2055]  source id 8, 3 packets: sampler-id variant (nfdump#101/#187)
    pkt 1: options template 259 (scope System 4 bytes; FLOW_SAMPLER_ID 48 1 byte,
           FLOW_SAMPLER_MODE 49 1 byte, FLOW_SAMPLER_RANDOM_INTERVAL 50 4 bytes) + template
           260 (= 256's fields + FLOW_SAMPLER_ID 48, 1 byte -> 37-byte records)
    pkt 2: options data 259: sampler 1 = mode 2 interval 100, sampler 2 = mode 2 interval
           1000 (two 10-byte records, no padding) + 7 records of 260 (1 byte padding)
    pkt 3: 6 records of 260 (2 bytes padding).  Records alternate sampler ids 1 and 2.

ipfix.pcap [4739]  observation domain 42, 6 messages, 40 data records + 1 options record
    msg 1: template set {300 (IPv4 5-tuple, octetDeltaCount 8B, packetDeltaCount 8B,
           flowStart/EndMilliseconds 152/153, ingress/egressInterface 10/14 4B,
           flowDirection 61, tcpControlBits 6 2B) and 301 (IPv6 5-tuple, 1/2 8B, 152/153,
           applicationName 96 variable length, enterprise PEN 29305 IE 1 (reverse
           octetDeltaCount) 8B, enterprise PEN 9 IE 12345 4B)}, options template set {302:
           scope observationDomainId 149 4B; samplingPacketInterval 305 4B = 1,
           samplingPacketSpace 306 4B = 99}, options data 302, 8 records of 300
    msg 2: 6 records of 301; applicationName encodings: short (len<255), empty (len 0),
           long 0xff+u16 with 300 bytes, long form used for a short string ("dns" as 0xff 00 03)
    msg 3: 10 records of 300 + 4 records of 301 (two data sets)
    msg 4: template withdrawal: template set with record {300, field count 0}
    msg 5: template set with a new 300 (IPv4 src/dst, protocolIdentifier, ports,
           octetDeltaCount 4B, packetDeltaCount 4B, flowStartSeconds 150, flowEndSeconds
           151, ipClassOfService 5 -> 30-byte records) and 3 records using it
    msg 6: 9 records of the new 300 (274-byte set + 2 bytes padding)
    Sets with variable-length records (301) are never padded (RFC 7011 allows but does not
    require padding, and padding after variable-length records is ambiguous).
    Header sequence = number of data records (options records included) in earlier messages.
    tshark 4.0 ignores the withdrawal and the redefinition (it keeps the first template 300
    for the whole capture), so msgs 5-6 are also written alone:
ipfix_after_withdrawal.pcap [4739]  msgs 5-6 of ipfix.pcap, byte-identical: tshark's oracle
    for the redefined template 300 (3 + 9 = 12 records).

ipfix_selector.pcap [4739]  observation domain 43, 2 messages: selector variant
    msg 1: options template 400 (scope selectorId 302 8B; samplingInterval 34 4B,
           samplingAlgorithm 35 1B), template 401 (IPv4 5-tuple, 1/2 8B, 152/153,
           selectorId 302 8B); options data 400: selector 1 -> 1000, selector 2 -> 64
    msg 2: 6 records of 401 alternating selectorId 1 and 2.

sflow.pcap [6343]  sFlow v5, agent 10.0.0.1, sub-agent 0, 3 datagrams, 20 flow samples
    dgram 1: 6 flow_samples (format 1, sampling_rate 256) + 1 counters_sample (format 2)
             with a generic interface counters record (format 1)
    dgram 2: 7 expanded flow_samples (format 3, sampling_rate 1024) + 1 expanded
             counters_sample (format 4, generic interface counters)
    dgram 3: 7 samples mixing format 1 and 3, some with an extended_switch record (1001)
    Sequence numbers and sample pools are per data source (ifIndex 1-4 for flow samples), so
    samples with equal sequence numbers share a datagram, as with real agents.
    Every flow sample has a raw packet header record (format 1, header_protocol 1 =
    Ethernet) with, in rotation, Ethernet+IPv4+TCP, +IPv4+UDP, +IPv4+ICMP, +IPv6+TCP and
    Ethernet+802.1Q+IPv4+TCP; headers are cut to at most 128 bytes (frame_length keeps the
    original length + 4 FCS bytes, stripped = 4).  Inner ports avoid ones tshark would
    dissect into noisy expert infos (TCP 53/80, UDP 123).

tests/flows/check_oracle.py PCAPDIR verifies all of the above against tshark.
"""

import json
import os
import random
import struct
import sys

from scapy.all import Ether, IP, IPv6, UDP, TCP, ICMP, Dot1Q, Raw, wrpcap, conf  # noqa: E402

conf.verb = 0

SRC_IP, DST_IP = "127.0.0.2", "127.0.0.1"
BASE_TS = 1_700_000_000  # pcap timestamps and export clocks are derived from this
UNIX_SECS = BASE_TS
SYS_UPTIME = 3_600_000  # ms: one hour of exporter uptime


def ip4(a, b, c, d):
    return "%d.%d.%d.%d" % (a, b, c, d)


def ip4b(s):
    return bytes(int(x) for x in s.split("."))


def ip6b(s):
    import ipaddress
    return ipaddress.IPv6Address(s).packed


def wrap(payloads, dport, sport=50000, first=0):
    """UDP datagrams 127.0.0.2 -> 127.0.0.1 on Ethernet with fixed ids and timestamps
    (frame i: IP id 0x1000+i, time BASE_TS + i ms)."""
    pkts = []
    for i, pl in enumerate(payloads, start=first):
        p = (Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
             / IP(src=SRC_IP, dst=DST_IP, id=0x1000 + i, ttl=64, flags="DF")
             / UDP(sport=sport, dport=dport) / Raw(pl))
        p = Ether(bytes(p))  # freeze lengths and checksums
        p.time = BASE_TS + i * 0.001
        pkts.append(p)
    return pkts


def write(outdir, name, payloads, dport, truth, sport=50000, first=0):
    path = os.path.join(outdir, name)
    wrpcap(path, wrap(payloads, dport, sport, first))
    with open(os.path.join(outdir, name.replace(".pcap", ".truth.json")), "w") as f:
        json.dump(truth, f, indent=1, sort_keys=True)
        f.write("\n")


# --------------------------------------------------------------------------------------
# NetFlow v5
# --------------------------------------------------------------------------------------

def gen_v5(outdir):
    rnd = random.Random(5)
    counts = [1, 17, 30]
    payloads, truth = [], {"dport": 2055, "packets": []}
    seq = 0
    protos = [6, 17, 1]
    for pi, n in enumerate(counts):
        sampling = (1 << 14) | 100 if pi == 1 else 0
        uptime = SYS_UPTIME + pi * 1000
        secs = UNIX_SECS + pi
        nsecs = 250_000_000 * pi
        hdr = struct.pack(">HHIIIIBBH", 5, n, uptime, secs, nsecs, seq, 0, 3, sampling)
        recs, rtruth = b"", []
        for ri in range(n):
            proto = protos[(pi + ri) % 3]
            src = ip4(10, pi + 1, rnd.randrange(256), rnd.randrange(1, 255))
            dst = ip4(192, 168, rnd.randrange(256), rnd.randrange(1, 255))
            nh = ip4(10, 255, 0, 1 + (ri % 4))
            if proto == 1:
                sport, dport = 0, (8 << 8) | 0 if ri % 2 else (3 << 8) | 3
                flags = 0
            else:
                sport = rnd.choice([22, 53, 80, 443, 5201, 40000 + ri])
                dport = rnd.randrange(1024, 65535)
                flags = rnd.choice([0x02, 0x12, 0x18, 0x19, 0x11, 0x04, 0x1b]) if proto == 6 else 0
            inif, outif = 1 + ri % 8, 9 + (ri * 3) % 8
            pkts = rnd.randrange(1, 5000)
            octets = pkts * rnd.randrange(40, 1500)
            first = uptime - rnd.randrange(10_000, 600_000)
            last = first + rnd.randrange(0, 9_000)
            tos = rnd.choice([0, 0x10, 0xb8])
            sas, das = rnd.choice([0, 64512, 65001]), rnd.choice([0, 15169, 13335, 65535])
            smask, dmask = rnd.choice([8, 16, 24, 32]), rnd.choice([0, 16, 24])
            recs += struct.pack(">4s4s4sHHIIIIHHBBBBHHBBH",
                                ip4b(src), ip4b(dst), ip4b(nh), inif, outif, pkts, octets,
                                first, last, sport, dport, 0, flags, proto, tos, sas, das,
                                smask, dmask, 0)
            rtruth.append(dict(srcaddr=src, dstaddr=dst, nexthop=nh, input=inif, output=outif,
                               dPkts=pkts, dOctets=octets, first=first, last=last,
                               srcport=sport, dstport=dport, tcp_flags=flags, prot=proto,
                               tos=tos, src_as=sas, dst_as=das, src_mask=smask,
                               dst_mask=dmask))
        payloads.append(hdr + recs)
        truth["packets"].append(dict(count=n, sys_uptime=uptime, unix_secs=secs,
                                     unix_nsecs=nsecs, flow_sequence=seq, engine_type=0,
                                     engine_id=3, sampling_mode=sampling >> 14,
                                     sampling_interval=sampling & 0x3fff, records=rtruth))
        seq += n
    write(outdir, "nfv5.pcap", payloads, 2055, truth)


# --------------------------------------------------------------------------------------
# NetFlow v9 helpers
# --------------------------------------------------------------------------------------

def pad4(b):
    return b + b"\x00" * (-len(b) % 4)


def flowset(fsid, body, pad=True):
    body = pad4(body) if pad else body
    return struct.pack(">HH", fsid, 4 + len(body)) + body


def v9_template(tid, fields):
    return struct.pack(">HH", tid, len(fields)) + b"".join(struct.pack(">HH", t, l) for t, l in fields)


def v9_options_template(tid, scopes, options):
    return (struct.pack(">HHH", tid, 4 * len(scopes), 4 * len(options))
            + b"".join(struct.pack(">HH", t, l) for t, l in scopes + options))


def enc_uint(v, n):
    return v.to_bytes(n, "big")


V9_T256 = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (1, 4), (2, 4), (10, 2), (14, 2),
           (22, 4), (21, 4), (61, 1), (5, 1)]
V9_T257 = [(27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (6, 1), (1, 8), (2, 8), (10, 2),
           (14, 2), (22, 4), (21, 4), (61, 1), (5, 1)]
V9_T258_SCOPE = [(1, 4)]
V9_T258_OPTS = [(34, 4), (35, 1)]
V9_T259_SCOPE = [(1, 4)]
V9_T259_OPTS = [(48, 1), (49, 1), (50, 4)]
V9_T260 = V9_T256 + [(48, 1)]


def v9_flow(rnd, v6, uptime, i):
    proto = [6, 17, 1][i % 3]
    if v6:
        src = "2001:db8:%x::%x" % (1 + i % 4, rnd.randrange(1, 0xffff))
        dst = "2001:db8:ff::%x" % rnd.randrange(1, 0xffff)
    else:
        src = ip4(10, 1, i % 4, rnd.randrange(1, 255))
        dst = ip4(172, 16, rnd.randrange(256), rnd.randrange(1, 255))
    if proto == 1:
        sport, dport, flags = 0, 0x0800, 0
    else:
        sport = rnd.choice([22, 53, 80, 443, 5201])
        dport = rnd.randrange(1024, 65535)
        flags = rnd.choice([0x02, 0x12, 0x18, 0x1b, 0x11]) if proto == 6 else 0
    pkts = rnd.randrange(1, 100000)
    octets = pkts * rnd.randrange(40, 1500)
    if v6:
        pkts *= 50000  # force values above 2^32 into the 8-byte counters
        octets *= 50000
    first = uptime - rnd.randrange(60_000, 1_200_000)
    last = first + rnd.randrange(0, 59_000)
    return {
        27 if v6 else 8: src, 28 if v6 else 12: dst, 7: sport, 11: dport, 4: proto, 6: flags,
        1: octets, 2: pkts, 10: 1 + i % 5, 14: 10 + i % 3, 22: first, 21: last,
        61: i % 2, 5: [0, 0x28, 0xb8][i % 3],
    }


def enc_record(fields, values):
    out = b""
    for t, l in fields:
        v = values[t]
        if isinstance(v, str):
            out += ip6b(v) if l == 16 else ip4b(v)
        else:
            out += enc_uint(v, l)
    return out


def jsonable(values):
    return {str(k): v for k, v in values.items()}


def v9_packet(count, uptime, secs, seq, source_id, flowsets):
    return struct.pack(">HHIIII", 9, count, uptime, secs, seq, source_id) + b"".join(flowsets)


def gen_v9(outdir):
    rnd = random.Random(9)
    src_id = 7
    plan = [  # (flowset list); each item: ("tpl", ids) | ("opt_tpl",) | ("opt_data",) | (tid, n)
        [("tpl", [256]), (256, 10)],
        [("tpl", [257]), ("opt_tpl",)],
        [("opt_data",), (257, 8)],
        [(256, 12)],
        [(257, 6), (256, 4)],
    ]
    tdefs = {256: V9_T256, 257: V9_T257}
    payloads, truth = [], {"dport": 2055, "source_id": src_id, "packets": [],
                           "templates": {"256": V9_T256, "257": V9_T257},
                           "options_templates": {"258": {"scope": V9_T258_SCOPE,
                                                          "options": V9_T258_OPTS}}}
    i = 0
    for seq, items in enumerate(plan):
        uptime = SYS_UPTIME + seq * 1000
        secs = UNIX_SECS + seq
        fsets, count, ptruth = [], 0, {"sequence": seq, "sys_uptime": uptime, "unix_secs": secs,
                                       "flowsets": []}
        for it in items:
            if it[0] == "tpl":
                fsets.append(flowset(0, b"".join(v9_template(t, tdefs[t]) for t in it[1])))
                count += len(it[1])
                ptruth["flowsets"].append({"id": 0, "templates": it[1]})
            elif it[0] == "opt_tpl":
                fsets.append(flowset(1, v9_options_template(258, V9_T258_SCOPE, V9_T258_OPTS)))
                count += 1
                ptruth["flowsets"].append({"id": 1, "templates": [258], "padding": 2})
            elif it[0] == "opt_data":
                vals = {1: 0x0a000001, 34: 512, 35: 2}
                fsets.append(flowset(258, enc_record(V9_T258_SCOPE + V9_T258_OPTS, vals)))
                count += 1
                ptruth["flowsets"].append({"id": 258, "records": [jsonable(vals)], "padding": 3})
            else:
                tid, n = it
                recs = []
                for _ in range(n):
                    recs.append(v9_flow(rnd, tid == 257, uptime, i))
                    i += 1
                body = b"".join(enc_record(tdefs[tid], r) for r in recs)
                fsets.append(flowset(tid, body))
                count += n
                ptruth["flowsets"].append({"id": tid, "records": [jsonable(r) for r in recs],
                                           "padding": -len(body) % 4})
        ptruth["count"] = count
        payloads.append(v9_packet(count, uptime, secs, seq, src_id, fsets))
        truth["packets"].append(ptruth)
    write(outdir, "nfv9.pcap", payloads, 2055, truth)

    # ---- sampler-id variant -----------------------------------------------------------
    rnd = random.Random(48)
    src_id = 8
    samplers = [{1: 0x0a000001, 48: 1, 49: 2, 50: 100}, {1: 0x0a000001, 48: 2, 49: 2, 50: 1000}]
    payloads, truth = [], {"dport": 2055, "source_id": src_id, "packets": [],
                           "templates": {"260": V9_T260},
                           "options_templates": {"259": {"scope": V9_T259_SCOPE,
                                                          "options": V9_T259_OPTS}}}
    i = 0
    for seq, items in enumerate([["tpls"], ["opt_data", 7], [6]]):
        uptime = SYS_UPTIME + seq * 1000
        secs = UNIX_SECS + seq
        fsets, count, ptruth = [], 0, {"sequence": seq, "sys_uptime": uptime, "unix_secs": secs,
                                       "flowsets": []}
        for it in items:
            if it == "tpls":
                fsets.append(flowset(1, v9_options_template(259, V9_T259_SCOPE, V9_T259_OPTS)))
                fsets.append(flowset(0, v9_template(260, V9_T260)))
                count += 2
                ptruth["flowsets"] += [{"id": 1, "templates": [259], "padding": 2},
                                       {"id": 0, "templates": [260]}]
            elif it == "opt_data":
                body = b"".join(enc_record(V9_T259_SCOPE + V9_T259_OPTS, s) for s in samplers)
                fsets.append(flowset(259, body))
                count += 2
                ptruth["flowsets"].append({"id": 259, "records": [jsonable(s) for s in samplers],
                                           "padding": -len(body) % 4})
            else:
                recs = []
                for _ in range(it):
                    r = v9_flow(rnd, False, uptime, i)
                    r[48] = 1 + i % 2
                    recs.append(r)
                    i += 1
                body = b"".join(enc_record(V9_T260, r) for r in recs)
                fsets.append(flowset(260, body))
                count += it
                ptruth["flowsets"].append({"id": 260, "records": [jsonable(r) for r in recs],
                                           "padding": -len(body) % 4})
        ptruth["count"] = count
        payloads.append(v9_packet(count, uptime, secs, seq, src_id, fsets))
        truth["packets"].append(ptruth)
    write(outdir, "nfv9_sampler.pcap", payloads, 2055, truth)


# --------------------------------------------------------------------------------------
# IPFIX
# --------------------------------------------------------------------------------------

VARLEN = 65535
# (ie, length, pen or None)
FIX_T300 = [(8, 4, None), (12, 4, None), (7, 2, None), (11, 2, None), (4, 1, None),
            (1, 8, None), (2, 8, None), (152, 8, None), (153, 8, None), (10, 4, None),
            (14, 4, None), (61, 1, None), (6, 2, None)]
FIX_T301 = [(27, 16, None), (28, 16, None), (7, 2, None), (11, 2, None), (4, 1, None),
            (1, 8, None), (2, 8, None), (152, 8, None), (153, 8, None), (96, VARLEN, None),
            (1, 8, 29305), (12345, 4, 9)]
FIX_T302_SCOPE = [(149, 4, None)]
FIX_T302_OPTS = [(305, 4, None), (306, 4, None)]
FIX_T300_NEW = [(8, 4, None), (12, 4, None), (4, 1, None), (7, 2, None), (11, 2, None),
                (1, 4, None), (2, 4, None), (150, 4, None), (151, 4, None), (5, 1, None)]
FIX_T400_SCOPE = [(302, 8, None)]
FIX_T400_OPTS = [(34, 4, None), (35, 1, None)]
FIX_T401 = [(8, 4, None), (12, 4, None), (7, 2, None), (11, 2, None), (4, 1, None),
            (1, 8, None), (2, 8, None), (152, 8, None), (153, 8, None), (302, 8, None)]


def fspec(fields):
    out = b""
    for ie, l, pen in fields:
        if pen is None:
            out += struct.pack(">HH", ie, l)
        else:
            out += struct.pack(">HHI", 0x8000 | ie, l, pen)
    return out


def ipfix_template(tid, fields):
    return struct.pack(">HH", tid, len(fields)) + fspec(fields)


def ipfix_options_template(tid, scopes, opts):
    return struct.pack(">HHH", tid, len(scopes) + len(opts), len(scopes)) + fspec(scopes + opts)


def fkey(ie, pen):
    return str(ie) if pen is None else "%d/%d" % (pen, ie)


def ipfix_record(fields, values, varenc=None):
    out = b""
    for ie, l, pen in fields:
        v = values[fkey(ie, pen)]
        if l == VARLEN:
            b = v.encode()
            if varenc == "long" or len(b) >= 255:
                out += b"\xff" + struct.pack(">H", len(b)) + b
            else:
                out += bytes([len(b)]) + b
        elif isinstance(v, str):
            out += ip6b(v) if l == 16 else ip4b(v)
        else:
            out += enc_uint(v, l)
    return out


def ipfix_msg(export_time, seq, domain, sets):
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body), export_time, seq, domain) + body


def ipfix_flow(rnd, v6, i, export_ms):
    proto = [6, 17, 1, 6][i % 4]
    if v6:
        src = "2001:db8:%x::%x" % (1 + i % 3, rnd.randrange(1, 0xffff))
        dst = "2001:db8:ee::%x" % rnd.randrange(1, 0xffff)
    else:
        src = ip4(10, 2, i % 4, rnd.randrange(1, 255))
        dst = ip4(198, 51, 100, rnd.randrange(1, 255))
    if proto == 1:
        sport, dport, flags = 0, 0x0300 | (i % 4), 0
    else:
        sport = rnd.choice([22, 53, 80, 443, 5201])
        dport = rnd.randrange(1024, 65535)
        flags = rnd.choice([0x02, 0x12, 0x18, 0x1b, 0x11, 0x104]) if proto == 6 else 0
    pkts = rnd.randrange(1, 1_000_000)
    octets = pkts * rnd.randrange(40, 1500)
    start = export_ms - rnd.randrange(60_000, 600_000)
    end = start + rnd.randrange(0, 59_999)
    d = {"8" if not v6 else "27": src, "12" if not v6 else "28": dst, "7": sport, "11": dport,
         "4": proto, "1": octets, "2": pkts, "152": start, "153": end}
    if not v6:
        d.update({"10": 1 + i % 6, "14": 100 + i % 3, "61": i % 2, "6": flags})
    else:
        d["29305/1"] = octets // 3 + i
        d["9/12345"] = 0xC0DE0000 + i
    return d


APPNAMES = ["http", "", "x" * 300, "dns", "ssh", "quic-long-" + "q" * 250]


def gen_ipfix(outdir):
    rnd = random.Random(10)
    dom = 42
    payloads = []
    truth = {"dport": 4739, "domain": dom, "messages": [],
             "templates": {"300": FIX_T300, "301": FIX_T301, "300(after withdrawal)": FIX_T300_NEW},
             "options_templates": {"302": {"scope": FIX_T302_SCOPE, "options": FIX_T302_OPTS}}}
    seq = 0
    i = 0
    v6i = 0
    for mi, items in enumerate([
        ["tpl", "opt_tpl", "opt_data", (300, 8)],
        [(301, 6)],
        [(300, 10), (301, 4)],
        ["withdraw"],
        ["tpl_new", ("300new", 3)],
        [("300new", 9)],
    ]):
        export = UNIX_SECS + mi
        export_ms = export * 1000
        sets, mt, nrec = [], {"export_time": export, "sequence": seq, "sets": []}, 0
        for it in items:
            if it == "tpl":
                sets.append(flowset(2, ipfix_template(300, FIX_T300) + ipfix_template(301, FIX_T301), pad=False))
                mt["sets"].append({"id": 2, "templates": [300, 301]})
            elif it == "opt_tpl":
                body = ipfix_options_template(302, FIX_T302_SCOPE, FIX_T302_OPTS)
                sets.append(flowset(3, body, pad=False))
                mt["sets"].append({"id": 3, "templates": [302]})
            elif it == "opt_data":
                vals = {"149": dom, "305": 1, "306": 99}
                sets.append(flowset(302, ipfix_record(FIX_T302_SCOPE + FIX_T302_OPTS, vals), pad=False))
                mt["sets"].append({"id": 302, "records": [vals]})
                nrec += 1
            elif it == "withdraw":
                sets.append(flowset(2, struct.pack(">HH", 300, 0), pad=False))
                mt["sets"].append({"id": 2, "withdrawn": [300]})
            elif it == "tpl_new":
                sets.append(flowset(2, ipfix_template(300, FIX_T300_NEW), pad=False))
                mt["sets"].append({"id": 2, "templates": [300], "redefinition": True})
            else:
                tid, n = it
                recs, body = [], b""
                for _ in range(n):
                    if tid == 301:
                        r = ipfix_flow(rnd, True, i, export_ms)
                        r["96"] = APPNAMES[v6i % len(APPNAMES)]
                        enc = "long" if v6i % 6 == 3 else None  # "dns" in 0xff 00 03 form
                        body += ipfix_record(FIX_T301, r, enc)
                        r["_varlen_encoding"] = "long" if (enc or len(r["96"]) >= 255) else "short"
                        v6i += 1
                    elif tid == 300:
                        r = ipfix_flow(rnd, False, i, export_ms)
                        body += ipfix_record(FIX_T300, r)
                    else:
                        f = ipfix_flow(rnd, False, i, export_ms)
                        r = {k: f[k] for k in ("8", "12", "4", "7", "11")}
                        r["1"] = f["1"] % (1 << 32)
                        r["2"] = f["2"] % (1 << 32)
                        r["150"] = f["152"] // 1000
                        r["151"] = f["153"] // 1000
                        r["5"] = [0, 0x28, 0xb8][i % 3]
                        body += ipfix_record(FIX_T300_NEW, r)
                    recs.append(r)
                    i += 1
                pad = tid != 301
                sets.append(flowset(300 if tid == "300new" else tid, body, pad=pad))
                mt["sets"].append({"id": 300 if tid == "300new" else tid,
                                   "layout": "new" if tid == "300new" else "original",
                                   "records": recs,
                                   "padding": (-len(body) % 4) if pad else 0})
                nrec += n
        payloads.append(ipfix_msg(export, seq, dom, sets))
        truth["messages"].append(mt)
        seq += nrec
    write(outdir, "ipfix.pcap", payloads, 4739, truth)
    # tshark 4.0 keeps the first definition of a template id for the whole capture (it
    # ignores the withdrawal and the redefinition), so its dissection of ipfix.pcap frames
    # 5-6 is wrong.  The same two messages alone give tshark a capture it decodes right.
    tail = dict(truth, messages=truth["messages"][4:],
                note="messages 5-6 of ipfix.pcap, byte-identical: oracle for the redefined 300")
    write(outdir, "ipfix_after_withdrawal.pcap", payloads[4:], 4739, tail, first=4)

    # ---- selectorId / samplingInterval variant -----------------------------------------
    rnd = random.Random(302)
    dom = 43
    sel = [{"302": 1, "34": 1000, "35": 2}, {"302": 2, "34": 64, "35": 1}]
    export = UNIX_SECS
    m1 = ipfix_msg(export, 0, dom, [
        flowset(3, ipfix_options_template(400, FIX_T400_SCOPE, FIX_T400_OPTS), pad=False),
        flowset(2, ipfix_template(401, FIX_T401), pad=False),
        flowset(400, b"".join(ipfix_record(FIX_T400_SCOPE + FIX_T400_OPTS, s) for s in sel), pad=False),
    ])
    recs = []
    for j in range(6):
        r = ipfix_flow(rnd, False, j, (export + 1) * 1000)
        r = {k: r[k] for k in ("8", "12", "7", "11", "4", "1", "2", "152", "153")}
        r["302"] = 1 + j % 2
        recs.append(r)
    m2 = ipfix_msg(export + 1, 2, dom, [flowset(401, b"".join(ipfix_record(FIX_T401, r) for r in recs), pad=False)])
    truth = {"dport": 4739, "domain": dom,
             "templates": {"401": FIX_T401},
             "options_templates": {"400": {"scope": FIX_T400_SCOPE, "options": FIX_T400_OPTS}},
             "messages": [{"export_time": export, "sequence": 0,
                           "sets": [{"id": 3, "templates": [400]}, {"id": 2, "templates": [401]},
                                    {"id": 400, "records": sel}]},
                          {"export_time": export + 1, "sequence": 2,
                           "sets": [{"id": 401, "records": recs}]}]}
    write(outdir, "ipfix_selector.pcap", [m1, m2], 4739, truth)


# --------------------------------------------------------------------------------------
# sFlow v5
# --------------------------------------------------------------------------------------

def inner_packet(kind, rnd, i):
    """Deterministic sampled frame; returns (bytes, description)."""
    smac, dmac = "02:00:00:00:%02x:01" % i, "02:00:00:00:%02x:02" % i
    pl = Raw(bytes((i * 7 + k) & 0xff for k in range(rnd.choice([0, 60, 200, 1000]))))
    sport = rnd.choice([22, 443, 5201] if kind != "udp4" else [53, 5201])
    dport = rnd.randrange(1024, 65535)
    src4 = ip4(10, 3, i % 4, 1 + i)
    dst4 = ip4(203, 0, 113, 10 + i)
    if kind == "tcp4":
        p = Ether(src=smac, dst=dmac) / IP(src=src4, dst=dst4, id=i, ttl=63) / TCP(sport=sport, dport=dport, flags="PA", seq=1000 * i, ack=1, window=512) / pl
        d = dict(l3="ipv4", src=src4, dst=dst4, proto=6, sport=sport, dport=dport, tcp_flags=0x18)
    elif kind == "udp4":
        p = Ether(src=smac, dst=dmac) / IP(src=src4, dst=dst4, id=i, ttl=63) / UDP(sport=sport, dport=dport) / pl
        d = dict(l3="ipv4", src=src4, dst=dst4, proto=17, sport=sport, dport=dport)
    elif kind == "icmp4":
        p = Ether(src=smac, dst=dmac) / IP(src=src4, dst=dst4, id=i, ttl=63) / ICMP(type=8, code=0, id=i, seq=1) / pl
        d = dict(l3="ipv4", src=src4, dst=dst4, proto=1, icmp_type=8, icmp_code=0)
    elif kind == "tcp6":
        s6, d6 = "2001:db8:5::%x" % (i + 1), "2001:db8:6::%x" % (i + 1)
        p = Ether(src=smac, dst=dmac) / IPv6(src=s6, dst=d6, hlim=63) / TCP(sport=sport, dport=dport, flags="S", seq=77 * i, window=1024) / pl
        d = dict(l3="ipv6", src=s6, dst=d6, proto=6, sport=sport, dport=dport, tcp_flags=0x02)
    elif kind == "vlan":
        p = Ether(src=smac, dst=dmac) / Dot1Q(vlan=100 + i, prio=3) / IP(src=src4, dst=dst4, id=i, ttl=63) / TCP(sport=sport, dport=dport, flags="A", seq=5 * i, ack=9, window=2048) / pl
        d = dict(l3="ipv4", vlan=100 + i, src=src4, dst=dst4, proto=6, sport=sport, dport=dport, tcp_flags=0x10)
    raw = bytes(p)
    d["frame_length"] = len(raw) + 4
    return raw, d


def sflow_raw_header(raw):
    hdr = raw[:128]
    # frame_length includes the 4 FCS bytes; stripped = 4 (the FCS, removed before the
    # header was taken); the header is the first <=128 bytes of the frame.
    body = struct.pack(">IIII", 1, len(raw) + 4, 4, len(hdr)) + pad4(hdr)
    return struct.pack(">II", 1, len(body)) + body


def sflow_ext_switch(svlan, sprio, dvlan, dprio):
    body = struct.pack(">IIII", svlan, sprio, dvlan, dprio)
    return struct.pack(">II", 1001, len(body)) + body


def sflow_if_counters(ifindex, k):
    body = struct.pack(">IIQIIQIIIIIIQIIIIII",
                       ifindex, 6, 10_000_000_000, 1, 3,
                       1_000_000_000 + k, 900_000 + k, 1000 + k, 50 + k, 2, 1, 0,
                       2_000_000_000 + k, 1_800_000 + k, 2000 + k, 60 + k, 3, 4, 0)
    return struct.pack(">II", 1, len(body)) + body


def gen_sflow(outdir):
    rnd = random.Random(6343)
    agent = "10.0.0.1"
    kinds = ["tcp4", "udp4", "icmp4", "tcp6", "vlan"]
    plan = [
        [("flow", 1, 256, False)] * 6 + [("ctr", 2)],
        [("flow", 3, 1024, False)] * 7 + [("ctr", 4)],
        [("flow", 1, 256, True), ("flow", 3, 1024, True), ("flow", 1, 256, False),
         ("flow", 3, 1024, True), ("flow", 1, 256, True), ("flow", 3, 1024, False),
         ("flow", 1, 256, True)],
    ]
    payloads, truth = [], {"dport": 6343, "agent": agent, "sub_agent": 0, "datagrams": []}
    # sequence numbers and sample pools are per data source (sampler = ifIndex), as real
    # agents keep them; so one datagram can hold two samples with the same sequence number
    # (tshark then names both "Flow sample, seq N" -> an array under --no-duplicate-keys).
    fseq, pool, cseq, i = {}, {}, {}, 0
    for di, samples in enumerate(plan):
        uptime = SYS_UPTIME + di * 1000
        body, dtruth = b"", {"sequence": di + 1, "uptime": uptime, "samples": []}
        for s in samples:
            if s[0] == "flow":
                _, fmt, rate, ext = s
                kind = kinds[i % len(kinds)]
                raw, desc = inner_packet(kind, rnd, i)
                ifin, ifout = 1 + i % 4, 5 + i % 3
                fseq[ifin] = fseq.get(ifin, 0) + 1
                pool[ifin] = pool.get(ifin, 0) + rate + i % 7
                recs = [sflow_raw_header(raw)]
                st = {"format": fmt, "sequence": fseq[ifin], "source_id_type": 0, "source_id_index": ifin,
                      "sampling_rate": rate, "sample_pool": pool[ifin], "drops": i % 2,
                      "input": ifin, "output": ifout, "header": desc, "header_length": min(len(raw), 128)}
                if ext:
                    vl = desc.get("vlan", 10)
                    recs.append(sflow_ext_switch(vl, 3, vl + 1, 0))
                    st["extended_switch"] = dict(src_vlan=vl, src_priority=3, dst_vlan=vl + 1, dst_priority=0)
                if fmt == 1:
                    sb = struct.pack(">IIIIIIII", fseq[ifin], (0 << 24) | ifin, rate, pool[ifin], i % 2,
                                     ifin, ifout, len(recs))
                else:
                    sb = struct.pack(">IIIIIIIIIII", fseq[ifin], 0, ifin, rate, pool[ifin], i % 2,
                                     0, ifin, 0, ifout, len(recs))
                sb += b"".join(recs)
                i += 1
            else:
                fmt = s[1]
                ifindex = 1 + di
                cseq[ifindex] = cseq.get(ifindex, 0) + 1
                if fmt == 2:
                    sb = struct.pack(">III", cseq[ifindex], ifindex, 1) + sflow_if_counters(ifindex, di)
                else:
                    sb = struct.pack(">IIII", cseq[ifindex], 0, ifindex, 1) + sflow_if_counters(ifindex, di)
                st = {"format": fmt, "sequence": cseq[ifindex], "source_id_type": 0, "source_id_index": ifindex,
                      "if_counters": {"ifIndex": ifindex, "ifType": 6, "ifSpeed": 10_000_000_000,
                                      "ifDirection": 1, "ifStatus": 3,
                                      "ifInOctets": 1_000_000_000 + di, "ifInUcastPkts": 900_000 + di,
                                      "ifInMulticastPkts": 1000 + di, "ifInBroadcastPkts": 50 + di,
                                      "ifInDiscards": 2, "ifInErrors": 1, "ifInUnknownProtos": 0,
                                      "ifOutOctets": 2_000_000_000 + di, "ifOutUcastPkts": 1_800_000 + di,
                                      "ifOutMulticastPkts": 2000 + di, "ifOutBroadcastPkts": 60 + di,
                                      "ifOutDiscards": 3, "ifOutErrors": 4, "ifPromiscuousMode": 0}}
            body += struct.pack(">II", st["format"], len(sb)) + sb
            dtruth["samples"].append(st)
        hdr = struct.pack(">II4sIIII", 5, 1, ip4b(agent), 0, di + 1, uptime, len(samples))
        payloads.append(hdr + body)
        truth["datagrams"].append(dtruth)
    write(outdir, "sflow.pcap", payloads, 6343, truth, sport=50001)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_pcaps.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    gen_v5(outdir)
    gen_v9(outdir)
    gen_ipfix(outdir)
    gen_sflow(outdir)


if __name__ == "__main__":
    main()
