"""One build from raw sources to trained checkpoints (``vl3data build CONFIG``).

:mod:`~vl3data.build.config` reads the build YAML, :mod:`~vl3data.build.graph` turns it into
nodes and edges (validating every job config first), :mod:`~vl3data.build.freshness` says which
nodes are stale, :mod:`~vl3data.build.execute` runs them as Ray tasks and
:mod:`~vl3data.build.plan` prices them before they run.
"""
