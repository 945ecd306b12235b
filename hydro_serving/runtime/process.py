"""Process helpers of a replica (die with the parent, name the process), as the runtime imports them.

Written once, in the replica contract (:mod:`hydro_serving.replica.process`); re-exported here so
the server and the zygote keep importing them from their own package.
"""

from __future__ import annotations

from hydro_serving.replica.process import die_with_parent, set_process_name

__all__ = ["die_with_parent", "set_process_name"]
