"""Two waits inside `ray.init(address="local")` cut short, for an embedded instance.

`ray.init` starts the node's processes in order, waiting on two of them:

- Its API server, which it polls (every 0.1 s) until the server has published its address,
  even with the dashboard off: then the server loads nothing but Ray's usage-stats reporter.
  The raylet is started only after this, 0.8-0.9 s later on a 2-core machine. While
  `quick_embedded_start` is open, a start without the dashboard starts no API server: Ray's
  step that starts it answers "no address, no process", which Ray's node takes as a server it
  need not stop. The one reader of the server's address in such an instance is the
  dashboard agent's event reporter, which waits for it before anything else and, without
  one, logs an error every second (1.4 MB an hour); an address where nothing can answer is
  published in its place (port 0). Its reports, made only when Ray writes events, fail there
  as they fail at the stock server, which has no endpoint for them either.
- The raylet, which registers with the GCS when its two agents (Python processes) have
  started, 0.9-1.7 s after it. Ray asks once 0.1 s after the start, then once a second (its
  C++ `GetNode` sleeps a whole second between looks), so the answer usually came at 2.1 s.
  Here the wait first looks every 20 ms itself, then hands over to Ray's, which then finds
  the node at its first look (peers workload, cold, five runs each way interleaved: time to
  first trial median 5.71 s -> 5.24 s).

Ray offers no setting for either, so the internal functions are swapped while the block is
open, where this Ray version has them; with another, or on any error, Ray's own run as they
are.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

POLL_SECONDS = 0.02
# Registration took 0.9-1.7 s here (longer on a loaded machine); past this, Ray's own wait
# (30 s, then an error) takes over, so a node that never registers fails after 35 s, not 30.
GIVE_UP_SECONDS = 5.0
NO_DASHBOARD = b"127.0.0.1:0"  # the address published for the absent API server
_SWAP = threading.RLock()


@contextmanager
def quick_embedded_start() -> Iterator[None]:
    """Within this block, a `ray.init` that starts a node without the dashboard starts no API
    server and notices its raylet within 20 ms."""
    try:
        from ray._private import ray_constants, services
        from ray._raylet import GcsClient  # type: ignore[attr-defined]
    except ImportError:
        yield
        return

    with _SWAP, ExitStack() as swaps:  # what is found is put back, in order, whichever threads
        swaps.enter_context(
            _swapped(services, "get_node", lambda f: _prompt_get_node(f, GcsClient))
        )
        swaps.enter_context(
            _swapped(
                services, "start_api_server", lambda f: _no_api_server(f, GcsClient, ray_constants)
            )
        )
        yield


def _prompt_get_node(ray_get_node: Callable[..., Any], client_class: Any) -> Callable[..., Any]:
    """Ray's `get_node`, after looking for the node every 20 ms (for up to 5 s)."""

    def wait_then_get(*args: Any, **kwargs: Any) -> Any:
        given = _arguments(ray_get_node, args, kwargs)
        if "gcs_address" in given and "node_id" in given:
            wait_until_registered(client_class, given["gcs_address"], given["node_id"])
        return ray_get_node(*args, **kwargs)

    return wait_then_get


def _no_api_server(
    ray_start: Callable[..., Any], client_class: Any, constants: Any
) -> Callable[..., Any]:
    """Ray's `start_api_server`, except that without the dashboard it starts nothing and
    publishes `NO_DASHBOARD` as the server's address."""

    def start_unless_dashboard_off(*args: Any, **kwargs: Any) -> Any:
        given = _arguments(ray_start, args, kwargs)
        if given.get("include_dashboard") is not False or "gcs_address" not in given:
            return ray_start(*args, **kwargs)
        try:
            client = client_class(
                address=given["gcs_address"], cluster_id=given.get("cluster_id_hex")
            )
            key = constants.DASHBOARD_ADDRESS.encode()
            client.internal_kv_put(key, NO_DASHBOARD, True, constants.KV_NAMESPACE_DASHBOARD)
        except Exception:
            return ray_start(*args, **kwargs)
        return "", None  # no web address, no process

    return start_unless_dashboard_off


@contextmanager
def _swapped(module: Any, name: str, wrap: Callable[[Callable[..., Any]], Any]) -> Iterator[None]:
    """`module.name` is `wrap(module.name)` within the block, if the module has it."""
    original = getattr(module, name, None)
    if original is None:
        yield
        return
    setattr(module, name, wrap(original))
    try:
        yield
    finally:
        setattr(module, name, original)


def _arguments(function: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    """`function`'s arguments by name for this call; none where they do not fit."""
    try:
        return dict(inspect.signature(function).bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return {}


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
