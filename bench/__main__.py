"""``python -m bench <name> [args...]``: run one benchmark. ``python -m bench`` lists them.

To add one: a module in this package with ``main(argv: list[str]) -> int``, registered in
``BENCHMARKS`` below (imported lazily, so one benchmark's dependencies never slow another).
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "get": ("bench.get_doc", "GET one small document: each backend next to its raw transport"),
    "rows": ("bench.rows", "a 1,000,000-row view: rows kept / dropped next to a raw download"),
    "changes": ("bench.changes", "a 200,000-change continuous feed: lines/s next to the raw rate"),
    "failover": ("bench.failover", "three nodes, the one in use dying every few seconds: "
                                   "requests/s and time to fail over"),
    "attachments": ("bench.attachments",
                    "a 256 MB attachment up and down: MB/s next to the raw transport, peak RSS"),
    "peers": ("bench.peers",
              "corduroy2 beside couchdb-python, aiocouch, ibmcloudant: the issue 19 table"),
    "fake": ("bench.fake", "FakeCouch: start time, and the behaviour suite's time next to pouchdb"),
    "cli": ("bench.cli", "corduroy2 dump/load of 100,000 docs next to couchbackup/couchrestore"),
}


def usage() -> str:
    lines = ["usage: python -m bench <name> [args...]   (<name> --help for its options)", ""]
    lines += [f"  {name:<10} {text}" for name, (_, text) in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
