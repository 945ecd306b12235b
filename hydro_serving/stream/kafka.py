"""The Kafka client (aiokafka) behind the stream worker: one producer, one consumer per function.

aiokafka was chosen by measurement against tansu (bench/stream_clients.py, README "Streaming with
Kafka"): confluent-kafka's wheel installs and produces faster, but its consumer group took ~23 s to
receive its first record on every join against tansu, against milliseconds for aiokafka; and the
worker's throughput is bounded by the function calls, not by the client. aiokafka is also asyncio
native, so the worker is one event loop. Everything aiokafka-specific is in this module.
"""

from __future__ import annotations

import logging
from typing import Any

from hydro_serving.errors import require_extra
from hydro_serving.stream.config import StreamConfig

log = logging.getLogger(__name__)


def make_producer(config: StreamConfig) -> Any:
    """acks=all: an answer counts as delivered only when every in-sync replica has it."""
    aiokafka = require_extra("aiokafka", "kafka")
    return aiokafka.AIOKafkaProducer(
        bootstrap_servers=config.bootstrap_servers,
        client_id=config.client_id,
        acks="all",
        linger_ms=2,
        max_request_size=max(1024 * 1024, config.keep_bytes * 2 + 64 * 1024),
    )


def consumer_factory(config: StreamConfig) -> Any:
    """A factory ``(pipeline) -> consumer`` subscribed to the pipeline's ``in`` topic.

    Auto-commit is off (the pipeline commits finished records only); a new group starts at the
    earliest offset, so records produced before the worker first ran are not skipped. Before a
    partition is taken away in a rebalance, its finished records are committed.
    """
    aiokafka = require_extra("aiokafka", "kafka")

    class Listener(aiokafka.ConsumerRebalanceListener):  # type: ignore[misc, name-defined]
        def __init__(self, pipeline: Any) -> None:
            self.pipeline = pipeline

        async def on_partitions_revoked(self, revoked: Any) -> None:
            if revoked:
                await self.pipeline.drain(list(revoked))
                log.warning("stream: %s gave up partitions %s (finished records committed)",
                            self.pipeline.function, _partitions(revoked))

        async def on_partitions_assigned(self, assigned: Any) -> None:
            log.warning("stream: %s assigned partitions %s", self.pipeline.function, _partitions(assigned))

    def make(pipeline: Any) -> Any:
        s = pipeline.streaming
        consumer = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap_servers,
            client_id=config.client_id,
            group_id=s.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(1024 * 1024, config.max_record_bytes + 64 * 1024),
            # a worker that died (SIGKILL, lost machine) holds its partitions until its session times out:
            # 10 s rather than the 45 s of recent Kafka defaults, so a restarted worker resumes quickly
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        consumer.subscribe([s.in_topic], listener=Listener(pipeline))
        return consumer

    return make


def _partitions(tps: Any) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"
