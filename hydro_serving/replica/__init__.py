"""The replica contract: what every provider hands a function's replica, written once.

* :mod:`.contract` - header and environment variable names shared by the gateway, the router and the runtime;
* :mod:`.envfile` - the one ``environment_file`` parser (strict: a bad line names the file and line);
* :mod:`.environment` - :func:`replica_environment`, the explicit environment of a replica;
* :mod:`.process` - die-with-parent and process names (Linux ``prctl``);
* :mod:`.sandbox` - the local provider's sandbox (a per-function uid and a private mount view).

It knows nothing of which provider runs the replica: providers call it.
"""
