"""``python -m hydro_serving.replica.launch MODULE ARGS...``: run MODULE as ``python -m`` would, undumpable.

A replica started as a fresh process in ``userns`` mode shares its uid with the gateway and the
other replicas; an ``exec`` makes a process dumpable again, so its ``/proc/<pid>/environ`` would be
open to them. This launcher (exec'd instead of ``python -m MODULE``) first makes the process
undumpable, then runs the module; the zygote's children do the same without it.
"""

from __future__ import annotations

import runpy
import sys

from hydro_serving.replica.process import make_undumpable


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m hydro_serving.replica.launch MODULE [ARGS...]")
    make_undumpable()
    module = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
