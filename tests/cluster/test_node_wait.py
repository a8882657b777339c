"""The prompter wait for a new node's raylet: it finds a registered node, gives up on an unknown
one (Ray's own wait then decides), and leaves Ray as it found it."""

import threading

from caviar.cluster.node_wait import prompt_node_wait, wait_until_registered


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


def test_ray_is_left_as_it_was_also_after_nested_and_concurrent_uses():
    from ray._private import services

    ray_get_node = services.get_node
    with prompt_node_wait():
        assert services.get_node is not ray_get_node
        with prompt_node_wait():
            pass
    assert services.get_node is ray_get_node

    inside, leave = threading.Event(), threading.Event()

    def other_thread():
        with prompt_node_wait():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other_thread)
    thread.start()
    inside.wait(10)
    threading.Timer(0.1, leave.set).start()
    with prompt_node_wait():
        thread.join(10)  # the other thread's use ends before this one does
    assert services.get_node is ray_get_node
