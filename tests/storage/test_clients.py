"""Contract: clients — registration binds a client id to its first user, last_mutation_id is
written with the mutations, and rejected-mutation reports are kept per client, bounded, and
forgotten once the client was told."""

from __future__ import annotations

import pytest

from synced_store.errors import QuotaExceededError
from synced_store.storage.base import InstanceStore, WriterTx

from .helpers import in_tx, key, put


def report(i: int, message: str = "no") -> dict[str, object]:
    return {"id": i, "name": "m", "kind": "invalid_input", "message": message}


async def test_the_first_user_to_connect_owns_a_client_id(store: InstanceStore) -> None:
    assert await in_tx(store, lambda tx: tx.register_client("c", "alice", 0)) == ("alice", 0)
    assert await store.client("c") == ("alice", 0)
    # Another user's connection with the same client id changes nothing.
    assert await in_tx(store, lambda tx: tx.register_client("c", "mallory", 9)) == ("alice", 0)
    owner = await store.client("c")
    assert owner is not None
    assert (owner.user_id, owner.last_mutation_id) == ("alice", 0)


async def test_last_mutation_id_is_written_with_the_mutations(store: InstanceStore) -> None:
    await in_tx(store, lambda tx: tx.register_client("c", "alice", 0))

    async def push(tx: WriterTx) -> None:
        await tx.write(key("a"), "", b"1", tx.version + 1)
        await tx.set_client("c", "alice", 3, tx.version + 1)
        assert await tx.client("c") == ("alice", 3)  # the transaction's own view

    await in_tx(store, push, bump=True)
    assert await store.client("c") == ("alice", 3)
    assert await in_tx(store, lambda tx: tx.register_client("c", "alice", 0)) == ("alice", 3)
    assert await store.client("unknown") is None


async def test_a_user_has_a_bounded_number_of_client_ids(store: InstanceStore) -> None:
    for cid in ("c1", "c2"):
        await in_tx(store, lambda tx, cid=cid: tx.register_client(cid, "alice", 0, max_clients=2))
    with pytest.raises(QuotaExceededError):
        await in_tx(store, lambda tx: tx.register_client("c3", "alice", 0, max_clients=2))
    # Known ids still connect, and other users are not affected.
    assert await in_tx(store, lambda tx: tx.register_client("c1", "alice", 0, max_clients=2))
    await in_tx(store, lambda tx: tx.register_client("b1", "bob", 0, max_clients=2))
    assert await store.client("c3") is None


async def test_reports_are_kept_until_the_client_was_told(store: InstanceStore) -> None:
    async def setup(tx: WriterTx) -> None:
        await tx.set_client("c", "alice", 5, tx.version)
        for i in (2, 4, 5):
            await tx.add_error("c", report(i))  # type: ignore[arg-type]

    await in_tx(store, setup)
    assert [e["id"] for e in await store.errors_between("c", 0, 5)] == [2, 4, 5]
    assert [e["id"] for e in await store.errors_between("c", 2, 4)] == [4]
    assert await store.errors_between("c", 0, 5) == [
        {"id": 2, "name": "m", "kind": "invalid_input", "message": "no"},
        {"id": 4, "name": "m", "kind": "invalid_input", "message": "no"},
        {"id": 5, "name": "m", "kind": "invalid_input", "message": "no"},
    ]
    # Reconnecting, the client says it was told up to 4: those reports go.
    assert await in_tx(store, lambda tx: tx.register_client("c", "alice", 4)) == ("alice", 5)
    assert [e["id"] for e in await store.errors_between("c", 0, 99)] == [5]
    # Never beyond what the server applied, and never by another user's connection.
    await in_tx(store, lambda tx: tx.register_client("c", "mallory", 99))
    await in_tx(store, lambda tx: tx.register_client("c", "alice", 99))
    assert await store.errors_between("c", 0, 99) == []
    assert await store.errors_between("other", 0, 99) == []


async def test_reports_are_bounded_per_client(store: InstanceStore) -> None:
    async def flood(tx: WriterTx) -> None:
        for i in range(1, 301):
            await tx.add_error("c", report(i))  # type: ignore[arg-type]
            await tx.add_error("d", report(i))  # type: ignore[arg-type]
        await tx.prune_errors("c", 100)

    await in_tx(store, flood)
    assert [e["id"] for e in await store.errors_between("c", 0, 999)] == list(range(201, 301))
    assert [e["id"] for e in await store.errors_between("c", 250, 260)] == list(range(251, 261))
    assert len(await store.errors_between("d", 0, 999)) == 300  # another client's are its own


async def test_reports_roll_back_with_their_transaction(store: InstanceStore) -> None:
    await put(store, "a")
    tx = await store.begin()
    await tx.add_error("c", report(1))  # type: ignore[arg-type]
    assert await store.errors_between("c", 0, 9) == []  # not committed yet
    await tx.rollback()
    assert await store.errors_between("c", 0, 9) == []


async def test_clients_are_read_together(store: InstanceStore) -> None:
    async def setup(tx: WriterTx) -> None:
        await tx.set_client("a", "alice", 3, tx.version)
        await tx.set_client("b", "bob", 1, tx.version)

    await in_tx(store, setup)
    tx = await store.begin()
    try:
        await tx.set_client("c", "carol", 7, tx.version)  # this transaction's own write too
        got = await tx.clients(["a", "c", "nobody", "b\x00"])
        assert got == {"a": ("alice", 3), "c": ("carol", 7)}
    finally:
        await tx.rollback()
