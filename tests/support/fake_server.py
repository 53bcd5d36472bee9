"""The suite's FakeCouch in a process of its own: ``python -m tests.support.fake_server``
prints ``{"url": ..., "admin": [name, password]}`` on one line once it serves, then serves
until its standard input closes (the suite closes it, or exits). With ``FAKE_SERVER_CPU_FILE``
set, it then writes the CPU seconds it spent there (for ``bench fake``).

In its own process, as pouchdb-server and CouchDB run, the server's Python and the tests'
clients run side by side on two CPUs instead of taking turns on one GIL (the behaviour suite:
76 s with the fake in the tests' process, 60 s so, on a loaded 2-CPU machine).
"""

from __future__ import annotations

import json
import os
import resource
import sys

from corduroy2.testing import FakeCouch

from .fake_functions import FUNCTIONS


def main() -> None:
    with FakeCouch(functions=FUNCTIONS).serve() as fake:
        print(json.dumps({"url": fake.url, "admin": fake.admin}), flush=True)
        sys.stdin.read()
    report = os.environ.get("FAKE_SERVER_CPU_FILE")
    if report:  # ``bench fake`` tells the server's CPU time from the tests' own
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(report, "w") as out:
            out.write(f"{usage.ru_utime + usage.ru_stime}\n")


if __name__ == "__main__":
    main()
