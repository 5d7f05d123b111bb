"""`serve --replicas N` and its Ray options (argparse only: nothing here imports Ray)."""

from __future__ import annotations

import argparse

from ..errors import InvalidRequestError


def add_replica_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--replicas", type=int, default=None,
        help="serve N engine replicas behind one endpoint on Ray Serve (pip install 'mistralpy[ray]'); requests "
        "go to the replica holding their prompt's prefix, else the least loaded (docs/DEPLOYMENT.md)",
    )  # fmt: skip
    p.add_argument("--ray-address", default=None, help="a Ray cluster to join (default: a local one is started)")
    p.add_argument("--min-replicas", type=int, default=None, help="autoscaling: the fewest replicas (with --replicas)")
    p.add_argument("--max-replicas", type=int, default=None, help="autoscaling: the most replicas (with --replicas)")
    p.add_argument(
        "--max-replicas-per-node", type=int, default=None,
        help="at most this many replicas on one Ray node (Ray Serve's max_replicas_per_node; 1: a node each)",
    )  # fmt: skip


def replica_counts(args: argparse.Namespace) -> dict[str, int]:
    """Ray Serve's num_replicas, or its autoscaling bounds starting at --replicas."""
    n, low, high = args.replicas, args.min_replicas, args.max_replicas
    if n is None or n < 1:
        raise InvalidRequestError(f"--replicas must be >= 1, got {n}")
    if low is None and high is None:
        return {"num_replicas": n}
    low, high = low if low is not None else 1, high if high is not None else max(n, low or 1)
    if not 0 <= low <= n <= high or high < 1:
        raise InvalidRequestError(f"need --min-replicas <= --replicas <= --max-replicas, got {low}, {n}, {high}")
    return {"min_replicas": low, "initial_replicas": n, "max_replicas": high}


def check_replica_flags(args: argparse.Namespace) -> None:
    per_node = args.max_replicas_per_node
    if args.replicas is None and (
        args.min_replicas is not None or args.max_replicas is not None or args.ray_address or per_node is not None
    ):
        raise InvalidRequestError(
            "--min-replicas, --max-replicas, --max-replicas-per-node and --ray-address need --replicas"
        )
    if per_node is not None and per_node < 1:
        raise InvalidRequestError(f"--max-replicas-per-node must be >= 1, got {per_node}")


def placement_options(args: argparse.Namespace) -> dict[str, int]:
    """Ray Serve's placement options for the engine replicas (none: Ray spreads them as it can)."""
    per_node = args.max_replicas_per_node
    return {} if per_node is None else {"max_replicas_per_node": per_node}
