"""Open instances, each with its writer task, owned by one task group for the app's lifetime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from ..schema import BackendConfig
from ..storage.sqlite import SqliteInstanceStore, instance_path
from .instance import Instance

__all__ = ["InstanceRegistry"]

log = logging.getLogger("synced_store.server")


class InstanceRegistry:
    """Creates instances on first use. Use as ``async with registry:`` (owns the writers)."""

    def __init__(
        self, config: BackendConfig, data_dir: Path, *, durability: str = "normal"
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.durability = durability
        self.instances: dict[str, Instance] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._lock = asyncio.Lock()
        #: Called with each new instance (the action runner hooks in here).
        self.on_open: list[Callable[[Instance], None]] = []

    async def __aenter__(self) -> InstanceRegistry:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for inst in self.instances.values():
            inst.stop()
        assert self._tg is not None
        await self._tg.__aexit__(None, None, None)
        for inst in self.instances.values():
            inst.close()
        self.instances.clear()

    def spawn(self, coro: object, name: str) -> asyncio.Task[object]:
        """Run a background coroutine in the registry's task group (failures are logged)."""
        assert self._tg is not None, "registry not entered"
        task: asyncio.Task[object] = self._tg.create_task(coro, name=name)  # type: ignore[arg-type]
        task.add_done_callback(_log_failure)
        return task

    async def get(self, instance_id: str) -> Instance:
        """The instance ``instance_id`` (validated), opening its database on first use."""
        inst = self.instances.get(instance_id)
        if inst is not None:
            return inst
        async with self._lock:
            inst = self.instances.get(instance_id)
            if inst is None:
                path = instance_path(self.data_dir, instance_id)
                store = await asyncio.to_thread(
                    SqliteInstanceStore, path, durability=self.durability
                )
                if store.schema_version is None:
                    store.schema_version = (
                        self.config.schema.schema_version if store.version else None
                    )
                inst = Instance(instance_id, store, self.config)
                writer = self.spawn(inst.run(), f"writer:{instance_id}")
                try:
                    if store.schema_version is None:
                        v = self.config.schema.schema_version
                        await inst.in_writer(lambda s: s.set_schema_version(v))
                    else:
                        await inst.migrate_schema()
                except BaseException:
                    inst.stop()
                    await writer
                    inst.close()
                    raise
                self.instances[instance_id] = inst
                for cb in self.on_open:
                    cb(inst)
                log.info("opened instance %s at %s", instance_id, path)
        return inst


def _log_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())
