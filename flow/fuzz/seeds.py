#!/usr/bin/env python3
"""Seed corpora for the flow decoder fuzz targets, from the test captures.

Usage:  python3 flow/fuzz/seeds.py PCAPDIR [CORPUSDIR]

PCAPDIR holds the captures of tests/flows/gen_pcaps.py (run that first; it needs scapy,
this script does not: the pcaps are read with the standard library).  CORPUSDIR defaults
to flow/fuzz/corpus.  Existing corpus files (what the fuzzer found) are kept; the seeds are
rewritten under fixed names, so running this again changes nothing.

Starting from real datagrams lets the fuzzer spend its time past the headers and inside
templates, samples and records rather than discovering the formats byte by byte.  Inputs
are written the way the targets read them (flow/fuzz/src/lib.rs):

  netflow_v5, sflow   one datagram per file;
  netflow_v9, ipfix   datagrams joined by SEP: every capture whole (templates, then data,
                      withdrawal, redefinition, options), the same reversed (data before
                      its template: held, then released), all captures in one (several
                      domains), and every datagram alone;
  any                 every datagram of every capture alone, unmodified.
"""

import os
import struct
import sys

# Must match `SEP` in src/lib.rs.
SEP = b"NEXT"

ETHERTYPE_IPV4 = 0x0800
LINKTYPE_ETHERNET = 1

CAPTURES = {
    "netflow_v5": ["nfv5.pcap"],
    "netflow_v9": ["nfv9.pcap", "nfv9_sampler.pcap"],
    "ipfix": ["ipfix.pcap", "ipfix_selector.pcap", "ipfix_after_withdrawal.pcap"],
    "sflow": ["sflow.pcap"],
}
SEQUENCE_TARGETS = {"netflow_v9", "ipfix"}


def read_pcap(path):
    """The frames of a classic pcap file (either byte order, µs or ns timestamps)."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("%s: not a classic pcap file" % path)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError("%s: linktype %d, expected Ethernet" % (path, linktype))
    frames, pos = [], 24
    while pos + 16 <= len(data):
        incl_len = struct.unpack(endian + "I", data[pos + 8:pos + 12])[0]
        frames.append(data[pos + 16:pos + 16 + incl_len])
        pos += 16 + incl_len
    return frames


def udp_payload(frame):
    """The UDP payload of an Ethernet/IPv4/UDP frame, or None."""
    if len(frame) < 14 or struct.unpack(">H", frame[12:14])[0] != ETHERTYPE_IPV4:
        return None
    ip = frame[14:]
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0x0F) * 4
    udp = ip[ihl:]
    if len(udp) < 8:
        return None
    udp_len = struct.unpack(">H", udp[4:6])[0]
    return udp[8:udp_len]


def datagrams(pcapdir, name):
    path = os.path.join(pcapdir, name)
    out = [p for p in map(udp_payload, read_pcap(path)) if p is not None]
    if not out:
        raise ValueError("%s: no UDP datagrams" % path)
    for d in out:
        if SEP in d:
            raise ValueError("%s: a datagram contains the separator %r" % (path, SEP))
    return out


def seeds_for(target, pcapdir):
    """(file name, input) pairs of one target."""
    seeds = []
    if target in SEQUENCE_TARGETS:
        every = [d for name in CAPTURES[target] for d in datagrams(pcapdir, name)]
        seeds.append(("all-captures", SEP.join(every)))
    for name in CAPTURES[target]:
        stem = name[: -len(".pcap")]
        dgrams = datagrams(pcapdir, name)
        if target in SEQUENCE_TARGETS:
            seeds.append(("%s-whole" % stem, SEP.join(dgrams)))
            seeds.append(("%s-reversed" % stem, SEP.join(reversed(dgrams))))
        seeds += [("%s-%d" % (stem, i + 1), d) for i, d in enumerate(dgrams)]
    return seeds


def any_seeds(pcapdir):
    seeds = []
    for names in CAPTURES.values():
        for name in names:
            stem = name[: -len(".pcap")]
            for i, d in enumerate(datagrams(pcapdir, name)):
                seeds.append(("%s-%d" % (stem, i + 1), d))
    return seeds


def write(corpusdir, target, seeds):
    d = os.path.join(corpusdir, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds:
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)
    print("%-11s %3d seeds, largest %5d bytes" % (target, len(seeds), max(len(s) for _, s in seeds)))


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[2])
    pcapdir = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    corpusdir = sys.argv[2] if len(sys.argv) == 3 else os.path.join(here, "corpus")
    for target in CAPTURES:
        write(corpusdir, target, seeds_for(target, pcapdir))
    write(corpusdir, "any", any_seeds(pcapdir))


if __name__ == "__main__":
    main()
