"""The embedded start's two shortcuts: no API server when the dashboard is off, and a prompter
wait for the raylet (it finds a registered node, gives up on an unknown one so that Ray's own
wait decides); Ray is left as it was found."""

import os
import threading
import time
from pathlib import Path

from caviar.cluster.embedded_start import quick_embedded_start, wait_until_registered


def descendants_running(script: str) -> list[int]:
    """This process's descendants whose command line names `script`."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(stat[1])
        except (OSError, ValueError, IndexError):
            continue

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 1)
            if pid == os.getpid():
                return True
        return False

    found = []
    for pid in parents:
        try:
            command = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if script.encode() in command and ours(pid):
            found.append(pid)
    return found


def test_an_embedded_start_without_dashboard_has_no_api_server(ray_instance):
    # The session's instance is started inside `quick_embedded_start` (tests/conftest.py).
    assert ray_instance.get(ray_instance.put(1)) == 1
    assert descendants_running("ray/dashboard/dashboard.py") == []
    assert descendants_running("ray/dashboard/agent.py") != []  # the rest of Ray starts
    # ... and its dashboard agent is not left asking every second for the server's address
    log = Path(ray_instance._private.worker.global_worker.node.get_logs_dir_path())
    log /= "dashboard_agent.log"
    deadline = time.monotonic() + 20
    while "Event agent cache buffer size" not in log.read_text():  # its reporter is up
        assert time.monotonic() < deadline, "the agent's event reporter never started"
        time.sleep(0.1)
    time.sleep(1.5)  # it asks again every second while there is no address
    assert "Get dashboard http address failed" not in log.read_text()


def test_a_registered_node_is_found(ray_instance):
    from ray._raylet import GcsClient

    context = ray_instance.get_runtime_context()
    assert wait_until_registered(GcsClient, context.gcs_address, context.get_node_id())


def test_an_unknown_node_is_given_up_on(ray_instance):
    from ray._raylet import GcsClient

    address = ray_instance.get_runtime_context().gcs_address
    assert not wait_until_registered(GcsClient, address, "ab" * 28, give_up=0.1)


def test_a_client_that_fails_hands_over_to_ray():
    class Broken:
        def __init__(self, address):
            raise RuntimeError("no GCS here")

    assert not wait_until_registered(Broken, "127.0.0.1:1", "ab" * 28)


def test_the_dashboard_asked_for_is_started_by_ray(ray_instance):
    from ray._private import services

    seen = []

    def ray_start(include_dashboard, raise_on_failure, host, gcs_address, cluster_id_hex):
        seen.append(include_dashboard)
        return "url", "info"

    gcs = ray_instance.get_runtime_context().gcs_address
    ray_own = services.start_api_server
    services.start_api_server = ray_start
    try:
        with quick_embedded_start():
            assert services.start_api_server(False, False, "host", gcs, None) == ("", None)
            assert services.start_api_server(True, True, "host", gcs, None) == ("url", "info")
            assert services.start_api_server(None, False, "host", gcs, None) == ("url", "info")
    finally:
        services.start_api_server = ray_own
    assert seen == [True, None]


def test_ray_is_left_as_it_was_also_after_nested_and_concurrent_uses():
    from ray._private import services

    ray_own = services.get_node, services.start_api_server
    with quick_embedded_start():
        assert services.get_node is not ray_own[0]
        assert services.start_api_server is not ray_own[1]
        with quick_embedded_start():
            pass
    assert (services.get_node, services.start_api_server) == ray_own

    inside, leave = threading.Event(), threading.Event()

    def other_thread():
        with quick_embedded_start():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other_thread)
    thread.start()
    inside.wait(10)
    threading.Timer(0.1, leave.set).start()
    with quick_embedded_start():
        thread.join(10)  # the other thread's use ends before this one does
    assert (services.get_node, services.start_api_server) == ray_own
