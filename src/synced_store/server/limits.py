"""Every bound the server enforces, in two frozen dataclasses: :class:`ServerLimits` (memory,
connections, open instances, rates, quotas, HTTP timeouts) and :class:`Retention` (how long
history, jobs, clients and errors are kept on disk).

The defaults are sized so that a normal chat or todo app never meets them; docs/security.md
and docs/operations.md say what each one protects and what a client sees when it is hit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.codec import MAX_FRAME_BYTES

__all__ = ["DAY", "Retention", "ServerLimits"]

DAY = 86_400.0


@dataclass(frozen=True)
class ServerLimits:
    """Bounds of one server process. Pass ``create_app(backend, limits=ServerLimits(...))``."""

    # -- connections and HTTP -------------------------------------------------------------
    #: Concurrent connections (HTTP and WebSocket) of the process; more get HTTP 503.
    max_connections: int = 4_096
    #: Largest WebSocket message accepted, in bytes (at most the protocol's 8 MiB frame).
    max_message_bytes: int = MAX_FRAME_BYTES
    #: Seconds a client has to send a whole HTTP request head (slowloris protection).
    header_timeout: float = 10.0
    #: Largest HTTP request head, in bytes.
    max_header_bytes: int = 64 * 1024
    #: Seconds an idle keep-alive HTTP connection stays open.
    keep_alive_timeout: float = 5.0
    #: Seconds a WebSocket has, after the upgrade, to send its ``connect`` message.
    handshake_timeout: float = 15.0

    # -- memory per connection ------------------------------------------------------------
    #: Seconds one send may wait for a client that does not read before it is closed (1008).
    send_timeout: float = 30.0
    #: Bytes a connection may have queued for sending (pokes not yet sent, replies) before its
    #: row queue is dropped and re-read from the database in parts.
    max_outbound_bytes: int = 8 * 1024 * 1024
    #: Size of one part of a catch-up (initial sync, reconnect, reset), in bytes.
    catch_up_part_bytes: int = 256 * 1024

    # -- open state -----------------------------------------------------------------------
    #: Instances open at once; the least recently used idle one is closed to open another.
    max_open_instances: int = 1_000
    #: Seconds an instance with no connection and no running job stays open.
    idle_instance_timeout: float = 60.0

    # -- rates per user (token buckets shared by all of a user's connections) -------------
    #: Frames a user may send per second (sustained), and in a burst.
    frames_per_second: float = 200.0
    frame_burst: int = 2_000
    #: Mutations a user may push per second (sustained), and in a burst.
    mutations_per_second: float = 2_000.0
    mutation_burst: int = 20_000
    #: Seconds a connection may stay over its rate (being slowed down) before it is closed.
    throttle_close_after: float = 10.0
    #: New connections a user may open per second (sustained), and in a burst; more: 1008.
    connects_per_second: float = 5.0
    connect_burst: int = 30
    #: Client ids one user may have in one instance; a new one beyond it is refused (1008).
    max_clients_per_user: int = 1_000
    #: Client-called actions (``store.action.X``) running at once on one connection.
    max_actions_per_connection: int = 16

    # -- action job quotas ----------------------------------------------------------------
    #: Unfinished (pending or running) jobs one user may have in one instance; one more
    #: ``enqueue_action`` is a permanent mutation error (``quota_exceeded``).
    max_queued_jobs_per_user: int = 100
    #: Unfinished jobs one instance may hold.
    max_queued_jobs_per_instance: int = 10_000
    #: Jobs of one user running at once in this process (the rest wait their turn).
    max_running_jobs_per_user: int = 4
    #: Jobs of one instance running at once in this process.
    max_running_jobs_per_instance: int = 16

    def __post_init__(self) -> None:
        if not 0 < self.max_message_bytes <= MAX_FRAME_BYTES:
            raise ValueError(f"max_message_bytes must be 1..{MAX_FRAME_BYTES}")
        for name in (
            "max_connections",
            "max_open_instances",
            "max_outbound_bytes",
            "catch_up_part_bytes",
            "frame_burst",
            "mutation_burst",
            "connect_burst",
            "max_clients_per_user",
            "max_actions_per_connection",
            "max_queued_jobs_per_user",
            "max_queued_jobs_per_instance",
            "max_running_jobs_per_user",
            "max_running_jobs_per_instance",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "header_timeout",
            "keep_alive_timeout",
            "handshake_timeout",
            "send_timeout",
            "idle_instance_timeout",
            "frames_per_second",
            "mutations_per_second",
            "connects_per_second",
            "throttle_close_after",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True)
class Retention:
    """How long an instance keeps what it no longer needs. All durations are in seconds.

    Compaction runs every ``compact_interval`` on open instances (and by hand with
    ``synced-store compact``).
    """

    #: Deletions (tombstones) older than this are forgotten; a client whose cookie is older
    #: gets a full reset instead of an incremental catch-up.
    tombstones: float = 7 * DAY
    #: Finished (``done``) jobs are deleted after this long.
    done_jobs: float = 1 * DAY
    #: ``failed`` jobs (kept for ``synced-store actions retry``) are deleted after this long.
    failed_jobs: float = 30 * DAY
    #: Clients not seen for this long are forgotten; one that comes back starts over under a
    #: new client id, re-pushing what it still has pending.
    clients: float = 90 * DAY
    #: Rejected-mutation reports kept per client until it is told (older ones are dropped).
    errors_per_client: int = 100
    #: Seconds between compaction passes of an open instance.
    compact_interval: float = 3_600.0

    def __post_init__(self) -> None:
        for name in ("tombstones", "done_jobs", "failed_jobs", "clients", "compact_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.errors_per_client < 1:
            raise ValueError("errors_per_client must be at least 1")
