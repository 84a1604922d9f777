#!/usr/bin/env python3
"""Where a master's live heap goes, from heaptrack's folded stacks.

Usage: heap_breakdown.py STACKS OBJECTS [IDLE_BYTES]

STACKS is `heaptrack_print --flamegraph-cost-type leaked -F` output, demangled by rustfilt,
of a process killed at rest: what heaptrack calls leaked is then what it held. Each stack is
put in the first category whose markers it contains; the table gives megabytes and bytes per
object (OBJECTS: resources + workers), above IDLE_BYTES (an idle master's heap) for the total.
"""
import re
import sys
from collections import Counter

# (category, every marker the stack must contain); first match wins.
CATEGORIES = [
    ("start-latency tracker (starts.rs)", ["(starts.rs)"]),
    ("assignment ledger (assignments.rs)", ["(assignments.rs)"]),
    ("leader placement (placement.rs, assigner.rs)", ["(placement.rs)"]),
    ("leader placement (placement.rs, assigner.rs)", ["(assigner.rs)"]),
    ("take-over: its own decoded resources (takeover.rs)", ["(takeover.rs)", "(resource.rs)"]),
    ("take-over: other (takeover.rs)", ["(takeover.rs)"]),
    ("change batches in flight (diff.rs)", ["(diff.rs)"]),
    ("event feed (events.rs)", ["(events.rs)"]),
    ("workers cache: values (registry.rs)", ["(registry.rs)"]),
    ("cache index by group (store.rs add)", ["add (store.rs)"]),
    ("interned worker ids (intern.rs)", ["(intern.rs)"]),
    ("cache: resource fields (resource.rs)", ["(watcher.rs)", "(resource.rs)"]),
    ("cache: map nodes (BTreeMap)", ["(watcher.rs)", "(node.rs)"]),
    ("cache: map nodes (BTreeMap)", ["(store.rs)", "(node.rs)"]),
    ("cache: keys (name_of)", ["name_of (watcher.rs)"]),
    ("cache: Arc<value> allocations", ["(watcher.rs)", "(sync.rs)"]),
    ("cache: other", ["(watcher.rs)"]),
    ("cache: other", ["(store.rs)"]),
    ("OpenAPI document and router", ["(openapi.rs)"]),
]


def main() -> None:
    stacks, objects = sys.argv[1], int(sys.argv[2])
    idle = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    totals: Counter = Counter()
    for line in open(stacks, encoding="utf-8", errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not count.isdigit():
            continue
        frames = re.sub(r"<[^;]*?>", "", stack)
        category = next(
            (c for c, marks in CATEGORIES if all(m in frames for m in marks)), "other"
        )
        totals[category] += int(count)
    total = sum(totals.values())
    print(f"{'category':<48} {'MB':>8} {'B/obj':>7}")
    for category, n in totals.most_common():
        print(f"{category:<48} {n / 1e6:8.2f} {n / objects:7.0f}")
    print(f"{'live heap':<48} {total / 1e6:8.2f} {total / objects:7.0f}")
    if idle:
        above = total - idle
        print(f"{'above an idle master':<48} {above / 1e6:8.2f} {above / objects:7.0f}")


if __name__ == "__main__":
    main()
