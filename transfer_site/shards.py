"""Which users' work one copy of a process owns, when several copies share it.

The outbox relay runs in copies: each publishes the transfers of its own users
only, so one user's transfers are published by one relay at a time, oldest
first, and that user's messages reach Kafka in order. A user's shard is
`user_id % count`, where `count` is the topics' partition count; which shards
a copy owns is decided by a Kafka consumer group (`MessageBus.claim_shards`),
so copies share shards the way consumers share partitions: a copy that joins,
stops or dies is rebalanced, and a copy gives shards up only between batches.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UserShards:
    """The users whose `user_id % count` is in `owned`."""

    count: int
    owned: frozenset[int]

    def owns(self, user_id: int) -> bool:
        return user_id % self.count in self.owned

    @property
    def everyone(self) -> bool:
        return set(range(self.count)) <= self.owned


EVERY_USER = UserShards(1, frozenset({0}))
