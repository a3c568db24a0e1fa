"""Actions: server-only work, run from the durable outbox or called by a client.

``ctx.enqueue_action`` inserts a job in the instance's outbox inside the mutation's own
transaction, so a job exists exactly when its mutation committed. This runner claims due jobs
through the instance's writer, runs each with a timeout and bounded concurrency, and records the
outcome: ``done``; ``pending`` again with exponential backoff; or ``failed`` after
``max_attempts`` (kept, listed by ``synced-store actions list``, re-queued by ``actions retry``).
Jobs left ``running`` by a killed process are re-queued when the instance opens: every job runs
at least once, so handlers should be idempotent (check state before acting).

On a shared backend (PostgreSQL, several server processes) a claim carries a **lease** of
``job_lease`` seconds, which this runner renews every third of it while the job runs. Every
``SWEEP_INTERVAL`` seconds it asks the database for instances with a job to claim — due, or
running with its lease over because its process died — and opens them (or re-queues those
jobs of an instance it has open), so another process picks the job up about one lease after
its process stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from ..core.context import ReadContext, json_input
from ..core.external import EXTERNAL_JOB, ExternalMixin
from ..core.keys import check_depth
from ..core.search import DEFAULT_LIMIT
from ..errors import ActionError, PermissionDeniedError, SyncedStoreError
from ..protocol.codes import ErrorKind
from ..protocol.messages import Action, ActionResult, action_failed
from ..storage.base import CommittedReader, WriterTx
from ..types import JobStatus, RowKey
from . import external
from .instance import Instance
from .registry import InstanceRegistry
from .search import search_rows
from .session import Session

__all__ = ["ActionContext", "ActionRunner", "JobListener"]

#: ``listener(instance, job)`` after a job's outcome is committed; ``job`` has ``id``, ``name``,
#: ``input``, ``user_id``, ``attempts``, ``status`` (done / pending / failed), ``output``,
#: ``error``.
JobListener = Callable[[Instance, dict[str, Any]], None]

log = logging.getLogger("synced_store.actions")
#: Seconds between two looks for claimable jobs of any instance (shared backends).
SWEEP_INTERVAL = 2.0


class _ReadOnlyTx:
    """Core ``AsyncTx`` over committed rows: an action reads, and writes through mutations."""

    copy_on_read = False
    is_async: Literal[True] = True

    def __init__(self, reader: CommittedReader) -> None:
        self.read = reader.read
        self.scan = reader.scan

    async def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        raise PermissionDeniedError("action contexts are read-only; write with ctx.mutate()")

    async def remove(self, key: RowKey) -> None:
        raise PermissionDeniedError("action contexts are read-only; write with ctx.mutate()")


class ActionContext(ExternalMixin, ReadContext):
    """The ``ctx`` an action receives: read-only tables, ``mutate``, ``platform``, ``user_id``."""

    def __init__(self, instance: Instance, user_id: str, action: str, job_id: int | None) -> None:
        self._reader = instance.store.reader()
        super().__init__(instance.config.schema, _ReadOnlyTx(self._reader), user_id, is_server=True)
        self.instance = instance
        self.instance_id = instance.instance_id
        self.platform = instance.platform
        self.action = action
        self.job_id = job_id
        self.source: dict[str, Any] = {"type": "action", "user_id": user_id, "action": action}

    async def mutate(self, name: str, input: Any) -> None:
        """Run mutator ``name`` on the server as a real mutation; returns once committed.

        Every client sees it like any other mutation. Raises if the mutator fails.
        """
        mdef = self.instance.config.schema.mutator(name)
        wire = json_input(mdef.input_encode, input, f"input for mutator {name!r}")
        await self.instance.mutate(self.user_id, name, wire, self.source)

    async def mutate_external(self, instance_id: str, mutator: str, input: Any) -> None:
        """Run ``mutator`` in instance ``instance_id`` once (core/external.py); returns once
        the delivery job is committed in this instance's outbox (it runs soon after). In an
        action run as a job, a retry's call that repeats the previous attempt's call at the
        same position (same target, mutator and input) is delivered only once."""
        await super().mutate_external(instance_id, mutator, input)
        calls = self.external_calls
        if self.job_id is not None:  # a retried job's same call is delivered once
            calls[-1]["key"] = external.job_call_key(self.instance_id, self.job_id, calls)
        await external.enqueue_from_action(self.instance, self.user_id, calls[-1:])

    async def search(
        self, table: str, query: str, *, limit: int = DEFAULT_LIMIT
    ) -> list[dict[str, Any]]:
        """Committed rows of searchable ``table`` whose text holds every word of ``query``,
        as :attr:`user_id` may see them (public and own private rows, as a pull): a list of
        ``{"key", "sort_key", "value", "private", "score"}``, newest first (or by relevance
        without a timestamp field). See server/search.py."""
        await self.instance.search_index.catch_up()  # every commit before it is indexed
        return await search_rows(self._reader, self.schema, self.user_id, table, query, limit)

    async def close(self) -> None:
        """Release the read connections."""
        await self._reader.close()
        if isinstance(self.external_access, external.ServerExternalAccess):
            await self.external_access.close()


class ActionRunner:
    """Runs queued jobs of every open instance, and client-called actions."""

    def __init__(
        self,
        registry: InstanceRegistry,
        *,
        max_attempts: int = 5,
        timeout: float = 300.0,
        concurrency: int = 32,
        client_concurrency: int = 32,
        client_wait: float = 30.0,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
        job_lease: float = 30.0,
    ) -> None:
        self.registry = registry
        #: Seconds a claimed job stays this process's without a renewal (shared backends).
        self.job_lease = job_lease
        #: Ids of the jobs this process runs, per instance (their leases are renewed).
        self._leased: dict[Instance, set[int]] = {}
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        #: Client-called actions have their own slots (they never starve the outbox's jobs)
        #: and wait at most ``client_wait`` seconds for one.
        self._client_slots = asyncio.Semaphore(client_concurrency)
        self.client_concurrency = client_concurrency
        self.client_wait = client_wait
        self._wake = asyncio.Event()
        self._recover: list[Instance] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[Any] | None = None
        self._stopping = False
        self._running_jobs = 0
        self._by_user: dict[str, int] = {}
        #: Called with ``(instance, job)`` when a job starts running (observability, tests).
        self.on_job_started: list[JobListener] = []
        #: Called after each job outcome is committed (observability, tests).
        self.on_job_finished: list[JobListener] = []

    def start(self) -> None:
        """Start claiming jobs (call inside the registry's lifetime).

        Instances whose database holds unfinished jobs are opened at once (as many as the
        open-instance limit allows, the rest as room frees up), so a restarted server resumes
        them without waiting for a client to connect.
        """
        self.registry.on_open.append(self._on_open)
        self.registry.on_open.append(lambda inst: external.plug_into(self.registry, inst))
        self.registry.action_concurrency = self._concurrency + self.client_concurrency
        self._loop_task = self.registry.spawn(self._loop(), "action-runner")
        if self.registry.storage.shared:
            # Other processes run jobs too: open what is due or abandoned, renew our leases.
            self._spawn(self._leases(), "action-runner:leases")
        else:
            self._spawn(self._open_instances_with_jobs(), "action-runner:resume")

    async def _open_instances_with_jobs(self) -> None:
        storage = self.registry.storage
        try:
            ids = await storage.instances_with_unfinished_jobs()
        except (SyncedStoreError, OSError) as exc:
            log.error("cannot look for unfinished jobs in %s: %s", storage.description, exc)
            return
        for instance_id in ids:
            self.registry.schedule_open(instance_id)

    async def _leases(self) -> None:
        """Renew the leases of running jobs; open instances with claimable jobs."""
        loop = asyncio.get_running_loop()
        renew_every = self.job_lease / 3
        renewed = swept = -math.inf
        while not self._stopping:
            now = loop.time()
            if now - swept >= min(SWEEP_INTERVAL, renew_every):
                swept = now
                await self._sweep()
            if now - renewed >= renew_every:
                renewed = now
                await self._renew()
            await asyncio.sleep(min(SWEEP_INTERVAL, renew_every) / 2)

    async def _renew(self) -> None:
        for inst, ids in list(self._leased.items()):
            if not ids or inst.state != "open":
                continue
            try:
                await inst.store.renew_jobs(list(ids), now=time.time(), lease=self.job_lease)
            except SyncedStoreError as exc:  # the next round tries again (the lease is 3x)
                log.warning("instance %s: renewing job leases failed: %s", inst.instance_id, exc)

    async def _sweep(self) -> None:
        registry = self.registry
        try:
            ids = await registry.storage.instances_with_due_jobs(time.time())
        except SyncedStoreError as exc:
            log.warning("looking for due jobs failed: %s", exc)
            return
        for instance_id in ids:
            inst = registry.instances.get(instance_id)
            if inst is None:
                registry.schedule_open(instance_id)  # _on_open re-queues and claims
            elif inst.state == "open" and inst not in self._recover:
                self._recover.append(inst)  # abandoned jobs go back to pending, then claimed
                self._wake.set()

    async def stop(self) -> None:
        """Stop: running jobs are cancelled and stay ``running`` until the next start."""
        self._stopping = True
        self._wake.set()
        for t in list(self._tasks):
            t.cancel()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, *self._tasks, return_exceptions=True)

    def _on_open(self, inst: Instance) -> None:
        inst.on_jobs_enqueued = self._wake.set
        self._recover.append(inst)
        self._wake.set()

    def _spawn(self, coro: Any, name: str) -> None:
        task = self.registry.spawn(coro, name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                next_due = await self._claim_round()
            except Exception:  # a storage failure must not take the server down
                log.exception("action runner: claiming jobs failed; retrying")
                next_due = time.time() + 1.0
            wait = 1.0 if next_due is None else max(0.0, min(1.0, next_due - time.time()))
            if self._running_jobs >= self._concurrency:
                wait = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _claim_round(self) -> float | None:
        """Requeue jobs of newly opened instances, claim due jobs; returns the next due time.

        An instance is asked (by a read, no transaction) when its next job is due; only an
        instance with a due job is claimed from through its writer. Jobs of a user or an
        instance at its concurrency limit wait for a later round.
        """
        while self._recover:
            inst = self._recover.pop()
            if inst.state != "open":
                continue
            try:
                n = await inst.in_writer(lambda tx: tx.requeue_running(time.time()))
            except Exception as exc:
                log.warning("instance %s: cannot resume jobs: %s", inst.instance_id, exc)
                continue
            if n:
                log.info("instance %s: resuming %d unfinished job(s)", inst.instance_id, n)
        limits = self.registry.limits
        next_due: float | None = None
        busy_users = {u for u, n in self._by_user.items() if n >= limits.max_running_jobs_per_user}
        for inst in list(self.registry.instances.values()):
            free = min(
                self._concurrency - self._running_jobs,
                limits.max_running_jobs_per_instance - inst.running_jobs,
            )
            if inst.state != "open":
                continue
            try:
                due = await inst.store.next_due()
            except Exception as exc:  # this instance's database fails: skip it, go on
                log.warning("instance %s: cannot read its jobs: %s", inst.instance_id, exc)
                continue
            now = time.time()
            if due is None:
                continue
            if due > now or free <= 0:
                next_due = due if next_due is None else min(next_due, due)
                continue
            skip = tuple(busy_users)

            async def claim(
                tx: WriterTx, now: float = now, free: int = free, skip: tuple[str, ...] = skip
            ) -> tuple[list[Any], float | None]:
                jobs = await tx.claim_jobs(now, free, skip, lease=self.job_lease)
                return jobs, await tx.next_due()

            try:
                jobs, due = await inst.in_writer(claim)
            except Exception as exc:
                log.warning("instance %s: cannot claim jobs: %s", inst.instance_id, exc)
                continue
            for job in jobs:
                self._started(inst, job)
                self._notify(inst, job, self.on_job_started)
                if self._by_user[job["user_id"]] >= limits.max_running_jobs_per_user:
                    busy_users.add(job["user_id"])
                self._spawn(self._run_job(inst, job), f"job:{inst.instance_id}:{job['id']}")
            if due is not None:
                next_due = due if next_due is None else min(next_due, due)
        return next_due

    def _started(self, inst: Instance, job: dict[str, Any]) -> None:
        self._leased.setdefault(inst, set()).add(job["id"])
        self._running_jobs += 1
        inst.running_jobs += 1
        self._by_user[job["user_id"]] = self._by_user.get(job["user_id"], 0) + 1

    def _ended(self, inst: Instance, job: dict[str, Any]) -> None:
        leased = self._leased.get(inst)
        if leased is not None:
            leased.discard(job["id"])
            if not leased:
                del self._leased[inst]
        self._running_jobs -= 1
        inst.running_jobs -= 1
        left = self._by_user.get(job["user_id"], 1) - 1
        if left > 0:
            self._by_user[job["user_id"]] = left
        else:
            self._by_user.pop(job["user_id"], None)
        self._wake.set()

    async def run(
        self,
        inst: Instance,
        name: str,
        input: Any,
        user_id: str,
        job_id: int | None = None,
        *,
        client: bool = False,
    ) -> Any:
        """Run action ``name`` now (with the timeout and a concurrency slot: a job's, or with
        ``client`` one of the client-called actions', waited for at most ``client_wait``);
        returns its validated output as JSON, or raises :class:`ActionError`."""
        if name == EXTERNAL_JOB and not client:  # a built-in job: deliver a mutate_external
            try:
                async with asyncio.timeout(self.timeout):
                    return await external.deliver(self.registry, inst, input, user_id)
            except TimeoutError:
                # Only the wait timed out: a delivery queued in the target's writer may still
                # have committed. Its key says so (then the job is done, not failed).
                if await external.delivered_late(self.registry, input, self.timeout):
                    return external.late_result(input)
                raise ActionError(f"delivery timed out after {self.timeout}s") from None
        schema = inst.config.schema
        try:
            adef = schema.action(name)
            handler = inst.config.actions[name]
        except (SyncedStoreError, KeyError) as exc:
            raise ActionError(f"unknown action {name!r}") from exc
        check_depth(input, what=f"input for action {name!r}")
        value = adef.parse_input(input)
        slots = self._client_slots if client else self._slots
        try:
            async with asyncio.timeout(self.client_wait if client else None):
                await slots.acquire()
        except TimeoutError:
            raise ActionError(
                f"the server is busy: no slot for action {name!r} within {self.client_wait:g}s"
            ) from None
        try:
            out = await self._run_in_slot(inst, handler, value, name, user_id, job_id)
        finally:
            slots.release()
        try:
            return adef.output_to_json(out)
        except SyncedStoreError as exc:
            raise ActionError(f"action {name!r} returned an invalid output: {exc}") from exc

    async def _run_in_slot(
        self, inst: Instance, handler: Any, value: Any, name: str, user_id: str, job_id: int | None
    ) -> Any:
        # The context opens its read connection only now, inside the slot: the descriptors
        # of actions are bounded by the slots (fd_budget counts them).
        ctx = ActionContext(inst, user_id, name, job_id)
        ctx.external_access = external.ServerExternalAccess(self.registry)
        deadline: asyncio.Timeout | None = None
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                return await handler(ctx, value)
        except TimeoutError as exc:
            if deadline is not None and deadline.expired():
                raise ActionError(f"action {name!r} timed out after {self.timeout}s") from None
            raise ActionError(f"action {name!r} failed: {exc!r}") from exc
        except ActionError:
            raise
        except Exception as exc:
            raise ActionError(f"action {name!r} failed: {exc}") from exc
        finally:
            await ctx.close()

    async def _run_job(self, inst: Instance, job: dict[str, Any]) -> None:
        # Never raises (except cancellation): a failing job must not take the server down.
        try:
            try:
                out = await self.run(inst, job["name"], job["input"], job["user_id"], job["id"])
            except SyncedStoreError as exc:  # ActionError, or invalid stored input
                await self._record_failure(inst, job, exc)
            else:
                now = time.time()
                await inst.in_writer(
                    lambda tx: tx.finish_job(job["id"], JobStatus.DONE, now=now, output=out)
                )
                self._notify(inst, {**job, "status": JobStatus.DONE, "output": out, "error": None})
        except Exception:
            # Recording the outcome failed (storage): the job stays ``running`` in the database
            # and is re-queued when the instance next opens.
            log.exception("job %s (%s): recording its outcome failed", job["id"], job["name"])
        finally:
            self._ended(inst, job)

    async def _record_failure(self, inst: Instance, job: dict[str, Any], exc: Exception) -> None:
        attempts = job["attempts"]
        now = time.time()
        if attempts >= self.max_attempts or isinstance(exc, external.PermanentDeliveryError):
            log.error(
                "job %s (%s) failed for good after %d attempts: %s",
                job["id"],
                job["name"],
                attempts,
                exc,
            )
            await inst.in_writer(
                lambda tx: tx.finish_job(job["id"], JobStatus.FAILED, now=now, error=str(exc))
            )
            self._notify(
                inst, {**job, "status": JobStatus.FAILED, "output": None, "error": str(exc)}
            )
        else:
            delay = min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1))
            log.warning(
                "job %s (%s) attempt %d failed, retry in %.2fs: %s",
                job["id"],
                job["name"],
                attempts,
                delay,
                exc,
            )
            await inst.in_writer(
                lambda tx: tx.finish_job(
                    job["id"], JobStatus.PENDING, now=now, error=str(exc), next_run_at=now + delay
                )
            )
            self._notify(
                inst, {**job, "status": JobStatus.PENDING, "output": None, "error": str(exc)}
            )

    def _notify(
        self, inst: Instance, job: dict[str, Any], listeners: list[JobListener] | None = None
    ) -> None:
        for listener in list(self.on_job_finished if listeners is None else listeners):
            try:
                listener(inst, job)
            except Exception:
                log.exception("on_job_finished listener raised")

    async def call_from_client(self, inst: Instance, session: Session, msg: Action) -> None:
        """Serve a client's ``action`` message with an ``action_result``."""
        rid = msg.request_id
        try:
            out = await self.run(inst, msg.name, msg.input, session.user_id, client=True)
        except SyncedStoreError as exc:
            kind = ErrorKind.ACTION_FAILED if isinstance(exc, ActionError) else exc.kind
            session.send_message(action_failed(rid, kind, str(exc)))
        else:
            session.send_message(ActionResult(request_id=rid, ok=True, output=out))
