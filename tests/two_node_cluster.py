"""Holds a two-node Ray cluster on this machine for a test (``tests.ray_head.two_node_cluster``).

Prints the head's address, then obeys lines on stdin: ``kill-worker`` SIGKILLs the second node
(answering ``killed``), ``stop`` shuts the cluster down. Run as ``python -m
tests.two_node_cluster CPUS_PER_NODE`` with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (loopback only).
"""

from __future__ import annotations

import sys

from ray.cluster_utils import Cluster


def main() -> None:
    cpus = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False}
    )
    worker = cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    print(cluster.address, flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "kill-worker":
                cluster.remove_node(worker, allow_graceful=False)
                print("killed", flush=True)
            elif line.strip() == "stop":
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
