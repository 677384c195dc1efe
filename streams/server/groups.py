"""The group coordinator: Kafka's classic consumer-group protocol and committed offsets.

The broker stays agnostic of assignment strategies, as Kafka is: members send the protocols they
support with opaque metadata, the coordinator picks one every member supports, hands the member
list to a leader, and passes the leader's opaque assignments back out in SyncGroup.

States (Kafka's ``GroupMetadata``)::

    Empty --join--> PreparingRebalance --all joined / timeout--> CompletingRebalance
          <--last member leaves/expires--   ^                        | leader's SyncGroup
                                            +---- join/leave/expiry -- Stable <-+

Membership lives in memory (after a store restart members rejoin: their requests get
UNKNOWN_MEMBER_ID, which every client handles); committed offsets are durable in the
:class:`~streams.storage.OffsetStore` and an OffsetCommit is answered only after its fsync.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from kafka.protocol.admin.groups import (
    DeleteGroupsResponse,
    DescribeGroupsResponse,
    ListGroupsResponse,
)
from kafka.protocol.consumer.group import (
    HeartbeatResponse,
    JoinGroupResponse,
    LeaveGroupResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    SyncGroupResponse,
)

from streams.protocol.apis import ApiKey, DecodedRequest, encode_response
from streams.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from streams import storage

    from .broker import Broker, Part, Reply
    from .flusher import Flusher

__all__ = ["GroupCoordinator", "GroupSettings"]

log = logging.getLogger(__name__)

FENCED_INSTANCE_ID = ErrorCode.FENCED_INSTANCE_ID
OFFSET_METADATA_TOO_LARGE = ErrorCode.OFFSET_METADATA_TOO_LARGE
_MAX_METADATA_BYTES = 4096  # Kafka's offset.metadata.max.bytes


class State(Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """Coordinator settings (Kafka's ``group.*`` broker configs)."""

    initial_rebalance_delay_ms: int = 100
    """Kafka waits 3 s for more members before the first rebalance; a developer running one
    consumer should not wait, so the default is short."""
    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 1_800_000
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000


@dataclass(eq=False)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    last_heartbeat: float = field(default_factory=time.monotonic)
    join_future: asyncio.Future[Any] | None = None
    join_request: DecodedRequest | None = None
    sync_future: asyncio.Future[Any] | None = None
    sync_request: DecodedRequest | None = None

    def metadata_for(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    @property
    def awaiting(self) -> bool:
        return self.join_future is not None or self.sync_future is not None


@dataclass(eq=False)
class Group:
    group_id: str
    state: State = State.EMPTY
    protocol_type: str | None = None
    protocol_name: str | None = None
    generation: int = 0
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static: dict[str, str] = field(default_factory=dict)  # group.instance.id -> member id
    pending: dict[str, float] = field(default_factory=dict)  # member ids handed out, not joined yet
    deadline: float | None = None  # when the join (or sync) phase gives up on laggards
    initial_join_until: float | None = None
    empty_since_ms: int = 0  # wall-clock time the group last became empty (0: never had members)

    def is_empty(self) -> bool:
        return not self.members

    def all_joined(self) -> bool:
        return all(m.join_future is not None for m in self.members.values())

    def select_protocol(self) -> str | None:
        """The first protocol (in the leader-candidates' preference order) every member supports."""
        if not self.members:
            return None
        common = set.intersection(*({name for name, _ in m.protocols} for m in self.members.values()))
        for member in self.members.values():
            for name, _ in member.protocols:
                if name in common:
                    return name
        return None


def reply_assignment(request: DecodedRequest, assignment: bytes) -> list[Part]:
    return [
        encode_response(
            request, SyncGroupResponse(throttle_time_ms=0, error_code=ErrorCode.NONE, assignment=assignment)
        )
    ]


class GroupCoordinator:
    """All groups of this node. Every method runs on the event loop."""

    def __init__(self, settings: GroupSettings, offsets: storage.OffsetStore, flusher: Flusher) -> None:
        self.settings = settings
        self.offsets = offsets
        self.flusher = flusher
        self.groups: dict[str, Group] = {}
        self._broker: Broker | None = None
        # Groups are not persisted: after a restart an idle group counts as empty from now on,
        # so its offsets are not expired before its members had the chance to come back.
        self._started_ms = int(time.time() * 1000)

    def bind(self, broker: Broker) -> dict[int, Any]:
        """Attach to the broker; returns the API handlers this coordinator serves."""
        self._broker = broker
        return {
            ApiKey.JOIN_GROUP: self.join_group,
            ApiKey.SYNC_GROUP: self.sync_group,
            ApiKey.HEARTBEAT: self.heartbeat,
            ApiKey.LEAVE_GROUP: self.leave_group,
            ApiKey.OFFSET_COMMIT: self.offset_commit,
            ApiKey.OFFSET_FETCH: self.offset_fetch,
            ApiKey.DESCRIBE_GROUPS: self.describe_groups,
            ApiKey.LIST_GROUPS: self.list_groups,
            ApiKey.DELETE_GROUPS: self.delete_groups,
        }

    # -- JoinGroup -----------------------------------------------------------------------------

    def join_group(self, request: DecodedRequest) -> Reply:
        body = request.body
        version = request.version
        loop = asyncio.get_running_loop()

        def reply(error: int, member_id: str = "", generation: int = -1) -> list[Part]:
            return [
                encode_response(
                    request,
                    JoinGroupResponse(
                        throttle_time_ms=0,
                        error_code=error,
                        generation_id=generation,
                        protocol_name="",  # non-nullable before v7
                        leader="",
                        member_id=member_id,
                        members=[],
                    ),
                )
            ]

        group_id = body.group_id
        if not group_id:
            return reply(ErrorCode.INVALID_GROUP_ID)
        timeout = body.session_timeout_ms
        if not self.settings.min_session_timeout_ms <= timeout <= self.settings.max_session_timeout_ms:
            return reply(ErrorCode.INVALID_SESSION_TIMEOUT, body.member_id)
        rebalance_timeout = body.rebalance_timeout_ms if version >= 1 else timeout
        protocols = [(p.name, bytes(p.metadata)) for p in body.protocols]
        if not body.protocol_type or not protocols:
            return reply(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, body.member_id)
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = Group(group_id)
        if group.state is State.DEAD:
            return reply(ErrorCode.COORDINATOR_NOT_AVAILABLE, body.member_id)
        if not group.is_empty():
            names = {name for name, _ in protocols}
            if group.protocol_type != body.protocol_type or not any(
                names & {n for n, _ in m.protocols} for m in group.members.values()
            ):
                return reply(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, body.member_id)
        instance_id = body.group_instance_id if version >= 5 else None
        member_id = body.member_id
        now = time.monotonic()
        client_id = request.header.client_id or ""
        host = self._client_host(request)

        if not member_id:
            new_id = f"{instance_id or client_id or 'member'}-{uuid.uuid4()}"
            if instance_id is not None and instance_id in group.static:
                return self._replace_static_member(
                    request, group, instance_id, new_id, protocols, timeout, rebalance_timeout, client_id, host
                )
            if version >= 4 and instance_id is None:
                # KIP-394: hand out the id first, so a client that dies before rejoining leaves
                # no ghost member behind.
                group.pending[new_id] = now + timeout / 1000
                return reply(ErrorCode.MEMBER_ID_REQUIRED, new_id)
            member_id = new_id
        elif member_id not in group.members:
            if group.pending.pop(member_id, None) is None:
                return reply(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
        elif instance_id is not None and group.static.get(instance_id) != member_id:
            return reply(FENCED_INSTANCE_ID, member_id)

        member = group.members.get(member_id)
        if member is None:
            member = Member(
                member_id, instance_id, client_id, host, timeout, rebalance_timeout, body.protocol_type, protocols
            )
            group.members[member_id] = member
            if instance_id is not None:
                group.static[instance_id] = member_id
            if group.is_empty() or len(group.members) == 1:
                group.protocol_type = body.protocol_type
            log.info("group %r: member %s joins", group_id, member_id)
            changed = True
        else:
            changed = member.protocols != protocols or member_id == group.leader_id
            member.protocols = protocols
            member.session_timeout_ms = timeout
            member.rebalance_timeout_ms = rebalance_timeout
        member.last_heartbeat = now

        if group.state in (State.STABLE, State.COMPLETING_REBALANCE) and not changed:
            # A follower rejoining with the same metadata: the current generation stands.
            return [self._join_response(request, group, member, leader_view=False)]

        future: asyncio.Future[list[Part]] = loop.create_future()
        if member.join_future is not None and not member.join_future.done():
            member.join_future.set_result(reply(ErrorCode.UNKNOWN_MEMBER_ID, member_id))
        member.join_future = future
        member.join_request = request
        self._prepare_rebalance(group, f"member {member_id} joined")
        self._maybe_complete_join(group)
        return future

    def _replace_static_member(
        self,
        request: DecodedRequest,
        group: Group,
        instance_id: str,
        new_id: str,
        protocols: list[tuple[str, bytes]],
        timeout: int,
        rebalance_timeout: int,
        client_id: str,
        host: str,
    ) -> Reply:
        """A static member restarted: it takes over its old slot under a new id (KIP-345)."""
        old_id = group.static[instance_id]
        old = group.members.pop(old_id)
        self._fail_waiters(old, FENCED_INSTANCE_ID)
        member = Member(
            new_id,
            instance_id,
            client_id,
            host,
            timeout,
            rebalance_timeout,
            old.protocol_type,
            protocols,
            assignment=old.assignment,
        )
        group.members[new_id] = member
        group.static[instance_id] = new_id
        old_leader = group.leader_id
        if old_leader == old_id:
            group.leader_id = new_id
        log.info("group %r: static member %s replaced %s", group.group_id, new_id, old_id)
        if group.state is State.STABLE and group.select_protocol() == group.protocol_name:
            # KIP-345: no rebalance. The answer names the leader as it was, so even a restarted
            # leader acts as a follower and gets its old assignment back from SyncGroup.
            return [self._join_response(request, group, member, leader_view=False, leader=old_leader)]
        future: asyncio.Future[list[Part]] = asyncio.get_running_loop().create_future()
        member.join_future = future
        member.join_request = request
        self._prepare_rebalance(group, f"static member {instance_id} rejoined")
        self._maybe_complete_join(group)
        return future

    def _fail_waiters(self, member: Member, error: int) -> None:
        """Answer a member's pending JoinGroup/SyncGroup with ``error`` (it was fenced or removed)."""
        if member.join_future is not None and not member.join_future.done() and member.join_request is not None:
            member.join_future.set_result(self._generic_error(member.join_request, error))
        if member.sync_future is not None and not member.sync_future.done() and member.sync_request is not None:
            member.sync_future.set_result(self._generic_error(member.sync_request, error))
        member.join_future = member.sync_future = None

    def _join_response(
        self, request: DecodedRequest, group: Group, member: Member, *, leader_view: bool, leader: str | None = None
    ) -> bytes:
        members = []
        if leader_view:
            members = [
                JoinGroupResponse.JoinGroupResponseMember(
                    member_id=m.member_id,
                    group_instance_id=m.group_instance_id,
                    metadata=m.metadata_for(group.protocol_name),
                )
                for m in group.members.values()
            ]
        return encode_response(
            request,
            JoinGroupResponse(
                throttle_time_ms=0,
                error_code=ErrorCode.NONE,
                generation_id=group.generation,
                protocol_type=group.protocol_type,
                protocol_name=group.protocol_name or "",
                leader=(leader if leader is not None else group.leader_id) or "",
                member_id=member.member_id,
                members=members,
            ),
        )

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.state is State.PREPARING_REBALANCE:
            return
        now = time.monotonic()
        if group.state is State.COMPLETING_REBALANCE:
            # Members waiting in SyncGroup must rejoin.
            for m in group.members.values():
                if m.sync_future is not None and not m.sync_future.done() and m.sync_request is not None:
                    m.sync_future.set_result(self._generic_error(m.sync_request, ErrorCode.REBALANCE_IN_PROGRESS))
                m.sync_future = None
        was_empty = group.state is State.EMPTY
        group.state = State.PREPARING_REBALANCE
        timeout = max((m.rebalance_timeout_ms for m in group.members.values()), default=0) / 1000
        group.deadline = now + timeout
        if was_empty:
            group.initial_join_until = now + self.settings.initial_rebalance_delay_ms / 1000
        log.info("group %r: preparing rebalance (%s)", group.group_id, reason)

    def _maybe_complete_join(self, group: Group, *, timed_out: bool = False) -> None:
        if group.state is not State.PREPARING_REBALANCE:
            return
        now = time.monotonic()
        if group.initial_join_until is not None and now < group.initial_join_until and not timed_out:
            self._schedule(group, group.initial_join_until)
            return
        if not group.all_joined() and not timed_out:
            return
        if timed_out:
            for m in [m for m in group.members.values() if m.join_future is None]:
                log.info("group %r: member %s did not rejoin in time; removing it", group.group_id, m.member_id)
                self._remove_member(group, m)
        group.initial_join_until = None
        if group.is_empty():
            self._to_empty(group)
            return
        group.generation += 1
        group.protocol_name = group.select_protocol()
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        group.state = State.COMPLETING_REBALANCE
        group.deadline = now + max(m.rebalance_timeout_ms for m in group.members.values()) / 1000
        log.info(
            "group %r: generation %d with %d member(s), protocol %s, leader %s",
            group.group_id,
            group.generation,
            len(group.members),
            group.protocol_name,
            group.leader_id,
        )
        for m in group.members.values():
            fut = m.join_future
            m.join_future = None
            m.assignment = b""
            if fut is not None and not fut.done() and m.join_request is not None:
                fut.set_result(
                    [self._join_response(m.join_request, group, m, leader_view=m.member_id == group.leader_id)]
                )

    def _schedule(self, group: Group, when: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + max(0.0, when - time.monotonic()), self._maybe_complete_join, group)

    # -- SyncGroup -----------------------------------------------------------------------------

    def sync_group(self, request: DecodedRequest) -> Reply:
        body = request.body

        def reply(error: int, assignment: bytes = b"") -> list[Part]:
            return [
                encode_response(
                    request,
                    SyncGroupResponse(throttle_time_ms=0, error_code=error, assignment=assignment),
                )
            ]

        group = self.groups.get(body.group_id)
        if group is None:
            return reply(ErrorCode.UNKNOWN_MEMBER_ID)
        error = self._check_member(request, group, body.member_id)
        if error:
            return reply(error)
        member = group.members[body.member_id]
        if body.generation_id != group.generation:
            return reply(ErrorCode.ILLEGAL_GENERATION)
        member.last_heartbeat = time.monotonic()
        if group.state is State.PREPARING_REBALANCE:
            return reply(ErrorCode.REBALANCE_IN_PROGRESS)
        if group.state is State.STABLE:
            return reply(ErrorCode.NONE, member.assignment)
        if group.state is not State.COMPLETING_REBALANCE:
            return reply(ErrorCode.UNKNOWN_MEMBER_ID)
        future: asyncio.Future[list[Part]] = asyncio.get_running_loop().create_future()
        if member.sync_future is not None and not member.sync_future.done() and member.sync_request is not None:
            member.sync_future.set_result(self._generic_error(member.sync_request, ErrorCode.REBALANCE_IN_PROGRESS))
        member.sync_future = future
        member.sync_request = request
        if member.member_id == group.leader_id:
            given = {a.member_id: bytes(a.assignment) for a in body.assignments}
            for m in group.members.values():
                m.assignment = given.get(m.member_id, b"")
            group.state = State.STABLE
            group.deadline = None
            log.info("group %r: generation %d is stable", group.group_id, group.generation)
            for m in group.members.values():
                fut = m.sync_future
                m.sync_future = None
                if fut is not None and not fut.done() and m.sync_request is not None:
                    fut.set_result(reply_assignment(m.sync_request, m.assignment))
        return future

    # -- Heartbeat / LeaveGroup ----------------------------------------------------------------

    def heartbeat(self, request: DecodedRequest) -> Reply:
        body = request.body
        error: int = ErrorCode.NONE
        group = self.groups.get(body.group_id)
        if group is None:
            error = ErrorCode.UNKNOWN_MEMBER_ID
        elif checked := self._check_member(request, group, body.member_id):
            error = checked
        elif body.generation_id != group.generation:
            error = ErrorCode.ILLEGAL_GENERATION
        else:
            member = group.members[body.member_id]
            member.last_heartbeat = time.monotonic()
            if group.state is State.PREPARING_REBALANCE:
                error = ErrorCode.REBALANCE_IN_PROGRESS
        return [encode_response(request, HeartbeatResponse(throttle_time_ms=0, error_code=error))]

    def leave_group(self, request: DecodedRequest) -> Reply:
        body = request.body
        group = self.groups.get(body.group_id)
        if request.version >= 3:
            identities = [(m.member_id, m.group_instance_id) for m in body.members]
        else:
            identities = [(body.member_id, None)]
        results = []
        for member_id, instance_id in identities:
            error: int = ErrorCode.NONE
            member = None
            if group is not None:
                if instance_id is not None:
                    known = group.static.get(instance_id)
                    if known is None:
                        error = ErrorCode.UNKNOWN_MEMBER_ID
                    elif member_id and member_id != known:
                        error = FENCED_INSTANCE_ID
                    else:
                        member = group.members.get(known)
                else:
                    member = group.members.get(member_id)
            if member is None and error == ErrorCode.NONE:
                error = ErrorCode.UNKNOWN_MEMBER_ID
            if member is not None and group is not None:
                log.info("group %r: member %s leaves", group.group_id, member.member_id)
                self._remove_member(group, member)
                self._after_departure(group, f"member {member.member_id} left")
            results.append(
                LeaveGroupResponse.MemberResponse(member_id=member_id, group_instance_id=instance_id, error_code=error)
            )
        top_error = results[0].error_code if request.version < 3 else ErrorCode.NONE
        if group is None:
            top_error = ErrorCode.UNKNOWN_MEMBER_ID
        return [
            encode_response(
                request,
                LeaveGroupResponse(throttle_time_ms=0, error_code=top_error, members=results),
            )
        ]

    def _check_member(self, request: DecodedRequest, group: Group, member_id: str) -> int:
        """Kafka's ``ClassicGroup.validateMember``: a static instance id is checked first, so the
        old incarnation of a restarted static member is fenced, not told to rejoin."""
        instance_id = getattr(request.body, "group_instance_id", None)
        if instance_id is not None:
            known = group.static.get(instance_id)
            if known is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if known != member_id:
                return FENCED_INSTANCE_ID
        if member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return ErrorCode.NONE

    def _remove_member(self, group: Group, member: Member) -> None:
        group.members.pop(member.member_id, None)
        if member.group_instance_id is not None and group.static.get(member.group_instance_id) == member.member_id:
            del group.static[member.group_instance_id]
        self._fail_waiters(member, ErrorCode.UNKNOWN_MEMBER_ID)

    def _after_departure(self, group: Group, reason: str) -> None:
        if group.is_empty():
            self._to_empty(group)
        elif group.state in (State.STABLE, State.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, reason)
        else:
            self._maybe_complete_join(group)

    def _to_empty(self, group: Group) -> None:
        group.state = State.EMPTY
        group.generation += 1
        group.empty_since_ms = int(time.time() * 1000)
        group.leader_id = None
        group.protocol_name = None
        group.deadline = None
        group.initial_join_until = None
        log.info("group %r is empty", group.group_id)

    # -- timers --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Expire members whose session lapsed and phases that outlived their timeout."""
        now = time.monotonic()
        for group in list(self.groups.values()):
            for member_id, until in list(group.pending.items()):
                if now > until:
                    del group.pending[member_id]
            for member in list(group.members.values()):
                if member.join_future is not None:
                    continue  # waiting for the join phase to finish; kept alive like Kafka does
                if now - member.last_heartbeat > member.session_timeout_ms / 1000:
                    log.info(
                        "group %r: member %s missed its %d ms session timeout; removing it",
                        group.group_id,
                        member.member_id,
                        member.session_timeout_ms,
                    )
                    self._remove_member(group, member)
                    self._after_departure(group, f"member {member.member_id} expired")
            if group.deadline is not None and now > group.deadline:
                if group.state is State.PREPARING_REBALANCE:
                    self._maybe_complete_join(group, timed_out=True)
                elif group.state is State.COMPLETING_REBALANCE:
                    laggards = [m for m in group.members.values() if m.sync_future is None]
                    for m in laggards:
                        self._remove_member(group, m)
                    self._after_departure(group, "members did not sync in time")
            if group.state is State.EMPTY and not group.pending and not self.offsets.has_group(group.group_id):
                del self.groups[group.group_id]

    def expire_offsets(self, now_ms: int) -> list[str]:
        """Drop committed offsets of groups that stayed empty longer than the retention (KIP-211)."""

        def empty_since(group_id: str) -> int | None:
            group = self.groups.get(group_id)
            if group is None:
                return self._started_ms
            if not group.is_empty():
                return None
            return max(group.empty_since_ms, self._started_ms)

        before = self.offsets.log_end_offset
        expired = self.offsets.expire(now_ms, self.settings.offsets_retention_ms, empty_since)
        if self.offsets.log_end_offset != before:
            self.flusher.appended(self.offsets)
        for group_id in expired:
            group = self.groups.get(group_id)
            if group is not None and group.is_empty() and not group.pending:
                del self.groups[group_id]
        return expired

    # -- offsets -------------------------------------------------------------------------------

    def offset_commit(self, request: DecodedRequest) -> Reply:
        body = request.body
        group_id = body.group_id
        generation = body.generation_id_or_member_epoch
        group = self.groups.get(group_id)
        error: int = ErrorCode.NONE
        if not group_id:
            error = ErrorCode.INVALID_GROUP_ID
        elif group is not None and group.state is State.DEAD:
            error = ErrorCode.COORDINATOR_NOT_AVAILABLE
        elif generation < 0 and (group is None or group.is_empty()):
            pass  # a simple consumer or an admin tool committing for an idle group
        elif group is None:
            error = ErrorCode.ILLEGAL_GENERATION  # a member of a generation this node never saw
        elif checked := self._check_member(request, group, body.member_id):
            error = checked
        elif generation != group.generation:
            error = ErrorCode.ILLEGAL_GENERATION
        elif group.state is State.COMPLETING_REBALANCE:
            error = ErrorCode.REBALANCE_IN_PROGRESS
        else:
            group.members[body.member_id].last_heartbeat = time.monotonic()
        broker = self._broker
        assert broker is not None
        topics_meta = broker.store.topics()
        now_ms = int(time.time() * 1000)
        to_commit = []
        results = []
        for topic in body.topics:
            meta = topics_meta.get(topic.name)
            parts = []
            for p in topic.partitions:
                code: int = error
                if code == ErrorCode.NONE:
                    if meta is None or not 0 <= p.partition_index < meta.partitions:
                        code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    elif (
                        p.committed_metadata is not None
                        and len(p.committed_metadata.encode("utf-8", "surrogatepass")) > _MAX_METADATA_BYTES
                    ):
                        code = OFFSET_METADATA_TOO_LARGE
                    elif p.committed_offset < -1 or getattr(p, "committed_leader_epoch", -1) < -1:
                        code = ErrorCode.INVALID_REQUEST
                    else:
                        epoch = getattr(p, "committed_leader_epoch", -1) if request.version >= 6 else -1
                        to_commit.append(
                            (topic.name, p.partition_index, p.committed_offset, epoch, p.committed_metadata)
                        )
                parts.append(
                    OffsetCommitResponse.OffsetCommitResponseTopic.OffsetCommitResponsePartition(
                        partition_index=p.partition_index, error_code=code
                    )
                )
            results.append(OffsetCommitResponse.OffsetCommitResponseTopic(name=topic.name, partitions=parts))
        if group is None and to_commit:
            group = self.groups[group_id] = Group(group_id)

        def encode() -> list[Part]:
            return [encode_response(request, OffsetCommitResponse(throttle_time_ms=0, topics=results))]

        if not to_commit:
            return encode()
        seq = self.offsets.commit(group_id, to_commit, now_ms)
        self.flusher.appended(self.offsets)
        durable = self.flusher.wait_durable(self.offsets, seq + 1)

        async def after_fsync() -> list[Part]:
            await durable
            return encode()

        return after_fsync()

    def offset_fetch(self, request: DecodedRequest) -> Reply:
        body = request.body
        committed = self.offsets.fetch(body.group_id)
        if body.topics is None:
            wanted: dict[str, list[int]] = {}
            for topic, partition in sorted(committed):
                wanted.setdefault(topic, []).append(partition)
        else:
            wanted = {t.name: list(t.partition_indexes) for t in body.topics}
        topics = []
        for name, partitions in wanted.items():
            parts = []
            for index in partitions:
                c = committed.get((name, index))
                parts.append(
                    OffsetFetchResponse.OffsetFetchResponseTopic.OffsetFetchResponsePartition(
                        partition_index=index,
                        committed_offset=c.offset if c is not None else -1,
                        committed_leader_epoch=c.leader_epoch if c is not None else -1,
                        metadata=(c.metadata if c is not None else "") or "",
                        error_code=ErrorCode.NONE,
                    )
                )
            topics.append(OffsetFetchResponse.OffsetFetchResponseTopic(name=name, partitions=parts))
        return [encode_response(request, OffsetFetchResponse(throttle_time_ms=0, topics=topics, error_code=0))]

    # -- admin ---------------------------------------------------------------------------------

    def describe_groups(self, request: DecodedRequest) -> Reply:
        out = []
        for group_id in request.body.groups:
            group = self.groups.get(group_id)
            if group is None:
                state = State.EMPTY.value if self.offsets.has_group(group_id) else State.DEAD.value
                out.append(
                    DescribeGroupsResponse.DescribedGroup(
                        error_code=ErrorCode.NONE,
                        group_id=group_id,
                        group_state=state,
                        protocol_type="",
                        protocol_data="",
                        members=[],
                    )
                )
                continue
            stable = group.state is State.STABLE
            members = [
                DescribeGroupsResponse.DescribedGroup.DescribedGroupMember(
                    member_id=m.member_id,
                    group_instance_id=m.group_instance_id,
                    client_id=m.client_id,
                    client_host=m.client_host,
                    member_metadata=m.metadata_for(group.protocol_name) if stable else b"",
                    member_assignment=m.assignment if stable else b"",
                )
                for m in group.members.values()
            ]
            out.append(
                DescribeGroupsResponse.DescribedGroup(
                    error_code=ErrorCode.NONE,
                    group_id=group_id,
                    group_state=group.state.value,
                    protocol_type=group.protocol_type or "",
                    protocol_data=group.protocol_name or "" if stable else "",
                    members=members,
                )
            )
        return [encode_response(request, DescribeGroupsResponse(throttle_time_ms=0, groups=out))]

    def list_groups(self, request: DecodedRequest) -> Reply:
        names = {g for g, grp in self.groups.items() if grp.state is not State.DEAD} | self.offsets.groups()
        wanted = (
            {s.lower() for s in (getattr(request.body, "states_filter", None) or [])} if request.version >= 4 else set()
        )
        listed = []
        for name in sorted(names):
            group = self.groups.get(name)
            state = (group.state if group is not None else State.EMPTY).value
            if wanted and state.lower() not in wanted:
                continue
            listed.append(
                ListGroupsResponse.ListedGroup(
                    group_id=name,
                    protocol_type=(group.protocol_type if group is not None else None) or "",
                    group_state=state,
                )
            )
        return [encode_response(request, ListGroupsResponse(throttle_time_ms=0, error_code=0, groups=listed))]

    def delete_groups(self, request: DecodedRequest) -> Reply:
        results = []
        seqs = []
        for group_id in request.body.groups_names:
            group = self.groups.get(group_id)
            if group is not None and not group.is_empty():
                error = ErrorCode.NON_EMPTY_GROUP
            elif group is None and not self.offsets.has_group(group_id):
                error = ErrorCode.GROUP_ID_NOT_FOUND
            else:
                error = ErrorCode.NONE
                self.groups.pop(group_id, None)
                if self.offsets.has_group(group_id):
                    seqs.append(self.offsets.delete_group(group_id))
                log.info("deleted group %r", group_id)
            results.append(DeleteGroupsResponse.DeletableGroupResult(group_id=group_id, error_code=error))

        def encode() -> list[Part]:
            return [encode_response(request, DeleteGroupsResponse(throttle_time_ms=0, results=results))]

        if not seqs:
            return encode()
        self.flusher.appended(self.offsets)
        durable = self.flusher.wait_durable(self.offsets, max(seqs) + 1)

        async def after_fsync() -> list[Part]:
            await durable
            return encode()

        return after_fsync()

    def topic_deleted(self, topic: str) -> None:
        """Committed offsets of a deleted topic go with it, as in Kafka."""
        self.offsets.remove_topic(topic)
        self.flusher.appended(self.offsets)

    # -- helpers -------------------------------------------------------------------------------

    def _client_host(self, request: DecodedRequest) -> str:
        return "/" + request.peer.rsplit(":", 1)[0] if request.peer else ""

    def _generic_error(self, request: DecodedRequest, error: int) -> list[Part]:
        if request.spec.key == ApiKey.JOIN_GROUP:
            response: Any = JoinGroupResponse(
                throttle_time_ms=0,
                error_code=error,
                generation_id=-1,
                protocol_name="",
                leader="",
                member_id="",
                members=[],
            )
        else:
            response = SyncGroupResponse(throttle_time_ms=0, error_code=error, assignment=b"")
        return [encode_response(request, response)]
