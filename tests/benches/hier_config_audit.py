"""hier_config's side of the compliance bench (tests/benches/compliance.rs).

Measures what hier_config 3.x (PyPI `hier-config`) takes to compare running configurations
with their intended (golden) configurations and compute the remediation, for every device:

    running   = get_hconfig(Platform.CISCO_IOS, running_text)
    generated = get_hconfig(Platform.CISCO_IOS, golden_text)
    WorkflowRemediation(running, generated).remediation_config   # config_to_get_to + order weights
    ... rendered as text lines (cisco_style_text, sorted)

Input: a JSONL file written by the bench, one device a line:
`{"name": ..., "running": <text>, "golden": <text>}`.

Work is spread over JOBS processes (default: the machine's cores, as SOTP's audit uses every
core). Each process loads its share of the file first; the clock starts when every process has
loaded (a barrier) and stops when the last one is done, so only hier_config's parsing, diff
and remediation are timed, not reading JSON.

Prints one JSON object: {"devices", "seconds", "remediation_lines", "devices_with_changes",
"jobs", "hier_config"}: devices compared, wall seconds, lines of all the remediations,
devices whose remediation is not empty, processes, hier_config's version.

    python hier_config_audit.py CONFIGS.jsonl [JOBS]
"""

import json
import multiprocessing as mp
import os
import sys
import time


def shard(path, index, count):
    """Every `count`-th device of the file, starting at `index`."""
    out = []
    with open(path, encoding="utf8") as f:
        for n, line in enumerate(f):
            if n % count == index:
                d = json.loads(line)
                out.append((d["running"], d["golden"]))
    return out


def worker(path, index, count, barrier, results):
    from hier_config import Platform, WorkflowRemediation, get_hconfig

    devices = shard(path, index, count)
    barrier.wait()
    lines = changed = 0
    for running_text, golden_text in devices:
        running = get_hconfig(Platform.CISCO_IOS, running_text)
        generated = get_hconfig(Platform.CISCO_IOS, golden_text)
        remediation = WorkflowRemediation(running, generated).remediation_config
        text = [c.cisco_style_text() for c in remediation.all_children_sorted()]
        lines += len(text)
        changed += bool(text)
    results.put((len(devices), lines, changed, time.perf_counter()))


def main():
    path = sys.argv[1]
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        hier_config_version = version("hier-config")
    except PackageNotFoundError:
        sys.exit("hier-config is not installed in this Python (scripts/setup installs it)")

    barrier = mp.Barrier(jobs + 1)
    results = mp.Queue()
    procs = [
        mp.Process(target=worker, args=(path, i, jobs, barrier, results)) for i in range(jobs)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    done = [results.get() for _ in procs]
    for p in procs:
        p.join()
    end = max(t for *_, t in done)
    print(
        json.dumps(
            {
                "devices": sum(d[0] for d in done),
                "seconds": end - start,
                "remediation_lines": sum(d[1] for d in done),
                "devices_with_changes": sum(d[2] for d in done),
                "jobs": jobs,
                "hier_config": hier_config_version,
            }
        )
    )


if __name__ == "__main__":
    main()
