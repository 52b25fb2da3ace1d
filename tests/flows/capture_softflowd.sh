#!/bin/sh
# Capture a real softflowd export of a traffic pcap (loopback only).
#
# Usage: tests/flows/capture_softflowd.sh TRAFFIC.pcap VERSION OUT.pcap [PORT]
#   VERSION: 5 | 9 | 10 (softflowd -v), PORT: UDP port on 127.0.0.1 (default 9995)
#   TRAFFIC.pcap e.g. from tests/flows/gen_traffic.py
#
# dumpcap records `udp port PORT` on lo; a tiny UDP sink listens on 127.0.0.1:PORT (without
# it the kernel answers ICMP port-unreachable and softflowd's connected socket gets
# ECONNREFUSED on later sends); softflowd runs in the foreground (-d), exports every flow at
# the end of the file and exits.
# -a: flow times come from the pcap timestamps (without it softflowd mixes its own uptime
# with the pcap clock and FIRST/LAST_SWITCHED are garbage).  SOFTFLOWD_EXTRA adds options.
# Needs root (dumpcap on lo).  Only processes started here are stopped, by PID.
# The export's source is 127.0.0.1:<ephemeral>; rewrite it for replay (see flows.md).
set -eu

TRAFFIC=$1
VERSION=$2
OUT=$3
PORT=${4:-9995}

WORK=$(mktemp -d /tmp/softflowd-capture.XXXXXX)
SINK_PID= DUMPCAP_PID= SFD_PID=
cleanup() {
    for p in $SFD_PID $DUMPCAP_PID $SINK_PID; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

if ss -Hlun "sport = :$PORT" | grep -q .; then
    echo "UDP port $PORT already in use" >&2; exit 1
fi

/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    s.recv(65536)
' "$PORT" &
SINK_PID=$!

dumpcap -q -i lo -f "udp dst port $PORT" -w "$WORK/out.pcap" -P 2>"$WORK/dumpcap.log" &
DUMPCAP_PID=$!
# wait until dumpcap is capturing
for _ in $(seq 50); do
    grep -q "Capturing on" "$WORK/dumpcap.log" 2>/dev/null && break
    sleep 0.1
done
sleep 0.3

# With -d and -r, softflowd reads the file, expires and exports every flow at EOF and exits
# ("Shutting down after pcap EOF"). Measured: with a control socket (-c) in this script's
# temp dir it instead shut down at once having read nothing, so none is used.
softflowd -d -r "$TRAFFIC" -n "127.0.0.1:$PORT" -v "$VERSION" -a ${SOFTFLOWD_EXTRA:-} \
    >"$WORK/softflowd.log" 2>&1 &
SFD_PID=$!
for _ in $(seq 100); do kill -0 "$SFD_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SFD_PID" 2>/dev/null && { echo "softflowd did not finish reading $TRAFFIC in 10 s" >&2; exit 1; }
grep -q "Packets processed: 0$" "$WORK/softflowd.log" && { cat "$WORK/softflowd.log" >&2; echo "softflowd processed no packets" >&2; exit 1; }
SFD_PID=
sleep 0.5
kill -INT "$DUMPCAP_PID"
wait "$DUMPCAP_PID" 2>/dev/null || true
DUMPCAP_PID=

cp "$WORK/out.pcap" "$OUT"
chmod 644 "$OUT"
echo "captured $(tshark -r "$OUT" 2>/dev/null | wc -l) export datagram(s) -> $OUT (pcap, Ethernet)"
tshark -r "$OUT" -d "udp.port==$PORT,cflow" 2>/dev/null || true
