"""``python -m bench [--quick] [--profile] [--cases hop,uds,...,runtime,router] [--out DIR]``.

Runs the chosen cases one after another (each starts and stops its own servers on 127.0.0.1),
prints the table, and writes ``<out>/<date>.json``. A case that fails is recorded as failed with
its error and the run goes on, so one broken part never hides the other numbers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import flame, goals, machine, results, wrk
from bench.context import Context
from bench.load import Settings

CASES = ("hop", "uds", "pipeline", "coldstart", "peers", "batching", "monitor", "runtime", "router")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true",
                        help="short wrk runs, 5 cold starts, peers only if their venvs exist (< 5 min)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for <date>.json")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy flame graphs (SVG + text summary in --out) of one c=8 point of the uds and "
                             "router cases; perturbs that point, which the JSON marks as profiled")
    parser.add_argument("--keep-work", action="store_true", help="keep the run's scratch folder (logs, specs)")
    args = parser.parse_args(argv)
    args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.case_list if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    return args


def run_case(name: str, ctx: Context) -> dict[str, Any]:
    import importlib

    module = importlib.import_module(f"bench.cases.{name}")
    started = time.monotonic()
    try:
        case = module.run(ctx)
    except Exception as exc:
        traceback.print_exc()
        case = {"status": "failed", "title": name, "reason": f"{type(exc).__name__}: {exc}"[-2000:]}
    case["seconds"] = round(time.monotonic() - started, 1)
    return case


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    if args.profile:
        flame.ensure_py_spy()  # before any case: a missing py-spy is installed (or fails) up front
    settings = Settings.for_mode(args.quick)
    work = Path(tempfile.mkdtemp(prefix="hydro-bench-"))
    ctx = Context(settings, work, args.quick, profile=args.profile, out=args.out)
    generator = {"name": "wrk", "version": wrk.version(),
                 "notes": "closed loop on keep-alive connections, POST body from a Lua script; wg/wrk 4.x does not "
                          "correct for coordinated omission (wrk2's -R does); the suite's own Python client's "
                          "percentiles are recorded beside wrk's"}
    doc = results.new_results(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
                              "quick" if args.quick else "full", machine.describe(), machine.package_versions(),
                              generator, settings.to_dict())
    started = time.monotonic()
    try:
        for name in args.case_list:
            print(f"-- {name} ...", flush=True)
            doc["cases"][name] = run_case(name, ctx)
            print(results.render_case(name, doc["cases"][name]), flush=True)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    doc["seconds"] = round(time.monotonic() - started, 1)
    doc["goals"] = goals.judge(doc["cases"])
    path = results.write(doc, args.out)
    print()
    print(results.render(doc))
    print(f"\nwrote {path} ({doc['seconds']:.0f}s)" + ("" if not args.keep_work else f"; scratch kept in {work}"))
    return 0 if all(c["status"] != "failed" for c in doc["cases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
