"""A prompter end to `ray.init`'s wait for the raylet it starts.

`ray.init(address="local")` starts the node's processes, then asks the GCS whether the raylet
has registered: once 0.1 s after starting it, then once a second (Ray's C++ `GetNode` sleeps a
whole second between looks). The raylet registers when its two agents (Python processes) have
started, about 0.9-1.7 s after it on a 2-core machine, so the answer usually comes at 2.1 s
instead: up to a second of every embedded start spent asleep. While `prompt_node_wait` is open,
the wait first looks every 20 ms itself, then hands over to Ray's, which then finds the node at
its first look. Measured on the peers workload (`bench.peers.run_caviar`, cold, 2 cores, five
runs each way, interleaved): time to first trial median 5.71 s -> 5.24 s.

Ray offers no setting for this, so the internal function the wait calls is wrapped, where this
Ray version has it; with another, or on any error, Ray's own wait runs as it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

POLL_SECONDS = 0.02
# Registration took 0.9-1.7 s here (longer on a loaded machine); past this, Ray's own wait
# (30 s, then an error) takes over, so a node that never registers fails after 35 s, not 30.
GIVE_UP_SECONDS = 5.0
_SWAP = threading.RLock()


@contextmanager
def prompt_node_wait() -> Iterator[None]:
    """Within this block, a `ray.init` that starts a node notices its raylet within 20 ms."""
    try:
        from ray._private import services
        from ray._raylet import GcsClient  # type: ignore[attr-defined]
    except ImportError:
        yield
        return
    with _SWAP:  # what is found is put back, in order, whichever threads use this
        ray_get_node = getattr(services, "get_node", None)
        if ray_get_node is None:
            yield
            return

        def get_node(gcs_address: str, node_id: str) -> Any:
            wait_until_registered(GcsClient, gcs_address, node_id)
            return ray_get_node(gcs_address, node_id)

        services.get_node = get_node
        try:
            yield
        finally:
            services.get_node = ray_get_node


def wait_until_registered(
    client_class: Any, gcs_address: str, node_id: str, give_up: float = GIVE_UP_SECONDS
) -> bool:
    """True once the GCS at `gcs_address` lists node `node_id` (hex); False after `give_up`
    seconds, or at once where the GCS cannot be asked."""
    deadline = time.monotonic() + give_up
    try:
        client = client_class(address=gcs_address)
        while True:
            if any(node.hex() == node_id for node in client.get_all_node_info(timeout=5)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
    except Exception:
        return False
