"""PrefixAffinityRouter: Ray Serve's power-of-two-choices router, with a memory: a request whose prompt prefix was
routed before goes back to the replica that holds its KV blocks (while that replica is among the candidates), so the
prefix cache hits; a new prefix goes to the less loaded of two replicas, which then keeps it."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter

KEYS = 65536  # prefixes remembered (LRU)


class PrefixAffinityRouter(PowerOfTwoChoicesRequestRouter):
    def initialize_state(self, **kwargs: Any) -> None:
        super().initialize_state(**kwargs)
        self.owners: OrderedDict[str, Any] = OrderedDict()  # prefix key -> replica id

    async def choose_replicas(self, candidate_replicas: list[Any], pending_request: Any = None) -> list[list[Any]]:
        key = _key(pending_request)
        owner = self.owners.get(key) if key is not None else None
        if owner is not None:
            held = [r for r in candidate_replicas if r.replica_id == owner]
            if held:
                self.owners.move_to_end(key)
                return [held]
        return await super().choose_replicas(candidate_replicas, pending_request)

    def on_request_routed(self, pending_request: Any, replica_id: Any, result: Any) -> None:
        super().on_request_routed(pending_request, replica_id, result)
        key = _key(pending_request)
        if key is not None:
            self.owners[key] = replica_id
            self.owners.move_to_end(key)
            while len(self.owners) > KEYS:
                self.owners.popitem(last=False)

    def on_replica_actor_died(self, replica_id: Any) -> None:
        super().on_replica_actor_died(replica_id)
        for key in [k for k, owner in self.owners.items() if owner == replica_id]:
            del self.owners[key]


def _key(pending_request: Any) -> str | None:
    args = getattr(pending_request, "args", None) or []
    return getattr(args[0], "prefix_key", None) if args else None
