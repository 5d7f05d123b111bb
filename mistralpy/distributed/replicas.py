"""`mistralpy serve --replicas N`: N engine replicas (each the whole `serve` app: its models, engines, routes) behind
one endpoint on Ray Serve. Ray's HTTP proxy hands requests to the Ingress, which sends each to a replica chosen by
PrefixAffinityRouter and streams the answer back. `--ray-address` joins a cluster (replicas may run on its other
nodes); `--min-replicas` / `--max-replicas` become Ray Serve's autoscaling bounds."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ..errors import InvalidRequestError
from .cli import placement_options, replica_counts

APP_NAME = "mistralpy"


def replicas_app(args: argparse.Namespace) -> Any:
    """The Ray Serve application (bound deployments) for these serve flags."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from .engine_replica import EngineReplica
    from .ingress import Ingress
    from .prefix_router import PrefixAffinityRouter

    counts = replica_counts(args)
    scaling = {"num_replicas": counts["num_replicas"]} if "num_replicas" in counts else {
        "num_replicas": "auto", "autoscaling_config": counts}  # fmt: skip
    engines = serve.deployment(
        EngineReplica,
        name="EngineReplica",
        ray_actor_options={"num_cpus": 0},  # the engines share the node's cores through their own thread pools
        max_ongoing_requests=max(args.max_num_seqs * 2, 8),
        health_check_period_s=2,
        request_router_config=RequestRouterConfig(request_router_class=PrefixAffinityRouter),
        **scaling,
        **placement_options(args),
    ).bind(args)
    ingress = serve.deployment(serve.ingress()(Ingress), name="Ingress", ray_actor_options={"num_cpus": 0})
    return ingress.bind(engines, args.max_body_bytes)


def serve_replicas(args: argparse.Namespace) -> int:
    try:
        import ray
        from ray import serve
    except ImportError:
        raise InvalidRequestError("--replicas needs Ray Serve: pip install 'mistralpy[ray]'") from None
    if args.allow_runtime_model_updating:  # a load on the one replica a request reaches would leave the others behind
        raise InvalidRequestError("--allow-runtime-model-updating does not work with --replicas")
    ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=args.log_level == "debug")
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(replicas_app(args), name=APP_NAME, route_prefix="/")
    print(f"mistralpy: {args.replicas} replicas serving on http://{args.host}:{args.port}/v1", file=sys.stderr,
          flush=True)  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0
