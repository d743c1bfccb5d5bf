"""The job engine: what every job shares, below the jobs and above the data contract.

Partitions and their plan, the work dir with its done markers, the Ray session (and the one
list of our packages shipped to cluster workers), the runner that maps stages over partitions
and writes each partition's shards in the worker that ran it, and the ``Job`` protocol with the
one skeleton (check, hash, restart, "already complete?", plan, Ray up/down, finalize, clean up)
every job runs through. It imports ``manifests`` only (``docs/ARCHITECTURE.md``).
"""
