"""Running one mutation on the server, inside the writer's transaction: a pending mutation made
under an older schema rewritten first, the mutator in a savepoint, its jobs checked against the
quotas and enqueued in the same transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.context import MutationContext
from ..core.external import EXTERNAL_JOB
from ..core.keys import check_depth
from ..errors import QuotaExceededError, StorageError, SyncedStoreError, UnknownNameError
from ..schema import BackendConfig
from ..storage.base import WriterTx
from ..types import RowKey
from .batch import ServerTx, call_in_tx
from .fanout import Change
from .limits import ServerLimits
from .platform import ServerPlatform

if TYPE_CHECKING:
    from .external import ServerExternalAccess as ExternalAccessServer

__all__ = ["MutationRunner"]

log = logging.getLogger("synced_store.server")


class MutationRunner:
    """Runs mutations of one instance's backend (its writer calls :meth:`run`)."""

    def __init__(
        self, config: BackendConfig, platform: ServerPlatform, limits: ServerLimits
    ) -> None:
        self.config = config
        self.platform = platform
        self.limits = limits
        #: Makes each mutation's external stores (server/external.py plugs it in).
        self.external: Callable[[], ExternalAccessServer] | None = None

    async def run(
        self,
        tx: WriterTx,
        user_id: str,
        name: str,
        args: Any,
        source: dict[str, Any],
        version: int,
        changes: dict[RowKey, Change],
        *,
        from_version: int | None = None,
        system: Any = None,
        after: Any = None,
    ) -> tuple[BaseException | None, int]:
        """Run one mutation in a savepoint. Returns (permanent error or None, jobs enqueued).

        A mutation made under an older schema version is first rewritten by the schema's
        ``migrate_pending_mutation`` steps (into zero, one or several mutations); ``system`` runs
        a system function (a data migration) instead of a named mutator.
        """
        schema = self.config.schema
        calls: list[tuple[str, Any]] = [] if system is not None else [(name, args)]
        try:
            if system is None:
                check_depth(args, what=f"input for mutator {name!r}")
            if from_version is not None and from_version != schema.schema_version:
                calls = schema.migrate_mutation(name, args, from_version)
        except Exception as exc:
            return exc, 0
        if system is None:
            for n, _ in calls:
                if n not in self.config.mutators:
                    return UnknownNameError(f"unknown mutator {n!r}"), 0
        stx = ServerTx(tx, version)
        jobs: list[tuple[str, Any]] = []
        access = self.external() if self.external is not None else None

        def context() -> MutationContext:
            ctx = MutationContext(
                schema, stx, user_id, is_server=True, source=source, platform=self.platform
            )
            ctx.external_access = access
            return ctx

        def collect(ctx: MutationContext) -> None:
            """The jobs ``ctx`` enqueued and its ``mutate_external`` calls (the outbox)."""
            if ctx.enqueued:
                jobs.extend(ctx.enqueued)
            if ctx.external_calls:
                jobs.extend((EXTERNAL_JOB, c) for c in ctx.external_calls)

        await tx.savepoint()
        try:
            if system is not None:
                ctx = context()
                ctx.is_system = True  # a hook or a data migration: trusted system scope
                await system(ctx)
                collect(ctx)
            for n, a in calls:
                value = schema.mutator(n).parse_input(a)
                ctx = context()
                await self.config.mutators[n](ctx, value)
                collect(ctx)
            if jobs:
                await self._check_job_quota(tx, user_id, len(jobs))
                now = time.time()
                for job_name, job_input in jobs:
                    await tx.add_job(job_name, job_input, user_id, now)
            if after is not None:
                await call_in_tx(after, tx)
        except StorageError:
            raise
        except Exception as exc:
            if tx.broken is not None:  # the mutator swallowed a storage error
                raise tx.broken from exc
            await tx.rollback_savepoint()
            if not isinstance(exc, SyncedStoreError):
                log.info("mutator %s raised on the server: %r", name, exc)
            return exc, 0
        finally:
            if access is not None:
                await access.close()
        await tx.release()
        changes.update(stx.changes)
        return None, len(jobs)

    async def _check_job_quota(self, tx: WriterTx, user_id: str, adding: int) -> None:
        """Raise :class:`QuotaExceededError` if ``adding`` more unfinished jobs would put
        ``user_id`` or the instance over its quota (the mutation is rejected as a whole)."""
        limits = self.limits
        mine, total = await tx.unfinished_jobs(user_id)
        if mine + adding > limits.max_queued_jobs_per_user:
            raise QuotaExceededError(
                f"user {user_id} already has {mine} unfinished action jobs in this instance "
                f"(limit {limits.max_queued_jobs_per_user})"
            )
        if total + adding > limits.max_queued_jobs_per_instance:
            raise QuotaExceededError(
                f"this instance already has {total} unfinished action jobs "
                f"(limit {limits.max_queued_jobs_per_instance})"
            )
