"""The public test harness: a real server, clients, a controllable network, and waits.

    async with await create_test_harness(backend) as h:
        alice = await h.create_client(user_id="alice")
        bob, net = await h.create_controlled_client(user_id="bob")
        net.outbound.disable_auto_flush()
        ...
        await wait_for_value(alice, table="counters", key="c", value={"value": 2})

Waits are subscription-based (no polling, no sleeps) and always bounded by a timeout.

Without a server (spec §7.5): :func:`seed_instance` writes an instance's rows straight to
storage (also as an older schema version, for migration tests); :func:`create_local_runner`
runs mutators and actions in memory with :func:`create_mock_platform_caller`'s fake services;
:func:`text_response`, :func:`text_responses`, :func:`sequential_responses`,
:func:`error_response` and :func:`tool_call` script the ``bot.stream`` service, for the
runner, the harness (``create_test_harness(backend, bot=...)``) or a real server.
"""

from .bots import (
    BotResponse,
    ScriptedBot,
    error_response,
    sequential_responses,
    text_response,
    text_responses,
    tool_call,
)
from .harness import TestHarness, create_test_harness
from .local_runner import LocalActionContext, LocalRunner, create_local_runner
from .platform import MockPlatformCaller, create_mock_platform_caller
from .seeding import Rows, seed_instance
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
    "BotResponse",
    "ControlledConnector",
    "ControlledTransport",
    "LocalActionContext",
    "LocalRunner",
    "MessageQueue",
    "MockPlatformCaller",
    "Rows",
    "ScriptedBot",
    "ServerProcess",
    "TestHarness",
    "create_local_runner",
    "create_mock_platform_caller",
    "create_test_harness",
    "error_response",
    "free_port",
    "has_inbound_type",
    "seed_instance",
    "sequential_responses",
    "text_response",
    "text_responses",
    "tool_call",
    "wait_for",
    "wait_for_all_clients",
    "wait_for_key_deleted",
    "wait_for_key_exists",
    "wait_for_key_match",
    "wait_for_value",
]
