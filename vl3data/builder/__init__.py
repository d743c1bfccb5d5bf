"""One build from raw sources to trained checkpoints (``vl3data build CONFIG``).

:mod:`~vl3data.builder.config` reads the build YAML, :mod:`~vl3data.builder.graph` turns it into
nodes and edges (validating every job config first), :mod:`~vl3data.builder.freshness` says which
nodes are stale, :mod:`~vl3data.builder.execute` runs them as Ray tasks and
:mod:`~vl3data.builder.plan` prices them before they run.
"""
