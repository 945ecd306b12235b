"""``hydro stream``: run the Kafka stream worker beside a gateway (see README "Streaming with Kafka").

Thin: reads flags and the environment once into a :class:`StreamConfig`, picks the source of the
streaming functions (the gateway's API by default, or ``--file``), opens the transport to the gateway
and runs the worker until SIGTERM/SIGINT, when it commits what is finished and leaves its groups.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from hydro_serving.cli.credentials import require_token, resolve_target, token_for
from hydro_serving.errors import ConfigError
from hydro_serving.gateway.client import GatewayClient
from hydro_serving.stack import load_stack, parse_duration


@click.command("stream")
@click.option("--bootstrap-servers", "-b", envvar="KAFKA_BOOTSTRAP_SERVERS", default=None,
              help="Kafka bootstrap servers, host:port[,host:port] (env KAFKA_BOOTSTRAP_SERVERS).")
@click.option("--gateway", "gateway_url", default=None,
              help="Gateway URL the functions are called through (else provider.gateway of --file, else "
                   "HYDRO_GATEWAY, else http://127.0.0.1:8080).")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The gateway's state directory, where its credentials are (else HYDRO_STATE; or HYDRO_TOKEN).")
@click.option("-f", "--file", "stack_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Read the streaming functions from this stack file instead of the gateway's API.")
@click.option("--filter", "names", multiple=True, help="Only these functions (with --file; repeatable).")
@click.option("--refresh", default="5s", show_default=True,
              help="How often to look for added, changed and removed streaming functions.")
@click.option("--retries", type=click.IntRange(0, 100), default=6, show_default=True,
              help="Extra tries of a record the function answers 429 or 503.")
@click.option("--max-record-bytes", type=click.IntRange(1), default=1024 * 1024, show_default=True,
              help="A record value larger than this goes to the error topic.")
@click.option("-v", "--verbose", is_flag=True, help="Log every rebalance and retry.")
def stream(bootstrap_servers: str | None, gateway_url: str | None, state: Path | None, stack_file: Path | None,
           names: tuple[str, ...], refresh: str, retries: int, max_record_bytes: int, verbose: bool) -> None:
    """Consume each streaming function's topic, call it through the gateway, produce answers and errors."""
    from hydro_serving.stream import kafka
    from hydro_serving.stream.config import StreamConfig
    from hydro_serving.stream.sources import GatewaySource, StackSource
    from hydro_serving.transport import open_transport

    if not bootstrap_servers:
        raise ConfigError("no Kafka brokers: pass --bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS",
                          field="--bootstrap-servers")
    try:
        refresh_s = parse_duration(refresh)
    except ValueError:
        raise ConfigError(f"--refresh: not a duration: {refresh!r}", field="--refresh") from None
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    stack = load_stack(stack_file) if stack_file is not None else None
    target = resolve_target(gateway_url, stack)
    url = target.url
    # the admin token goes only to the gateway it belongs to; listing the gateway's functions needs it
    token = token_for(target, state) if stack_file is not None else require_token(target, state)
    config = StreamConfig(bootstrap_servers=bootstrap_servers, gateway_url=url, token=token, refresh=refresh_s,
                          retries=retries, max_record_bytes=max_record_bytes)
    source = (StackSource(stack_file, names) if stack_file is not None
              else GatewaySource(GatewayClient(url, token)))
    transport = open_transport(url, {"Authorization": f"Bearer {token}"} if token else {})
    asyncio.run(_run(config, source, transport, kafka))


async def _run(config: object, source: object, transport: object, kafka: object) -> None:
    from hydro_serving.stream.worker import StreamWorker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = StreamWorker(config, source, transport, kafka.make_producer(config),  # type: ignore[arg-type, attr-defined]
                          kafka.consumer_factory(config))  # type: ignore[attr-defined]
    await worker.run(stop)
