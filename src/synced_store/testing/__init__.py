"""The public test harness: a real server, clients, a controllable network, and waits.

    async with await create_test_harness(backend) as h:
        alice = await h.create_client(user_id="alice")
        bob, net = await h.create_controlled_client(user_id="bob")
        net.outbound.disable_auto_flush()
        ...
        await wait_for_value(alice, table="counters", key="c", value={"value": 2})

Waits are subscription-based (no polling, no sleeps) and always bounded by a timeout.
"""

from .harness import TestHarness, create_test_harness
from .server_process import ServerProcess, free_port
from .transport import ControlledConnector, ControlledTransport, MessageQueue, has_inbound_type
from .waiters import (
    wait_for,
    wait_for_all_clients,
    wait_for_key_deleted,
    wait_for_key_exists,
    wait_for_key_match,
    wait_for_value,
)

__all__ = [
    "ControlledConnector",
    "ControlledTransport",
    "MessageQueue",
    "ServerProcess",
    "TestHarness",
    "create_test_harness",
    "free_port",
    "has_inbound_type",
    "wait_for",
    "wait_for_all_clients",
    "wait_for_key_deleted",
    "wait_for_key_exists",
    "wait_for_key_match",
    "wait_for_value",
]
