"""``python -m bench.ui_async [--calls 100000] [--functions 100]``: the Async screen's reads on a big queue.

Fills a scratch ``gateway.db`` (the async queue's real :class:`AsyncStore`) with ``--calls`` calls
spread over ``--functions`` functions and the four lasting states, then times what the Async page
and its event stream read each time: the counts table (one ``GROUP BY`` over the table) and the
newest calls (all, and one function's dead letters). Prints milliseconds per read (mean of 20).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from hydro_serving.gateway.asyncstore import AsyncStore
from hydro_serving.ui.asyncview import counts, recent


def run(calls: int, functions: int, rounds: int = 20) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="bench-ui-async-"))
    store = AsyncStore(folder)
    try:
        rows = [(f"id{i}", f"fn{i % functions}", "POST", "", "[]", b"{}",
                 ("queued", "dead", "succeeded", "failed")[i % 4], 0.0, float(i)) for i in range(calls)]
        store._db.execute("BEGIN")  # a bench-only bulk fill: the store inserts one call per transaction
        store._db.executemany("INSERT INTO async_calls (id, function, method, path, headers, body, status, "
                              "next_at, submitted_at) VALUES (?,?,?,?,?,?,?,?,?)", rows)
        store._db.execute("COMMIT")
        out = {}
        for label, read in (("counts", lambda: counts(store)), ("recent", lambda: recent(store, None, None)),
                            ("recent dead of one function", lambda: recent(store, "dead", "fn7"))):
            started = time.perf_counter()
            for _ in range(rounds):
                read()
            out[label] = (time.perf_counter() - started) / rounds * 1000
        return out
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_async")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--functions", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"{args.calls} async calls over {args.functions} functions")
    for label, ms in run(args.calls, args.functions).items():
        print(f"  {label:30} {ms:8.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
