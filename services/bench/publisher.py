"""The benchmark's agents: a separate process publishing the planned workload (`python -m
services.bench.publisher JOB.json`), as fast as the broker confirms within a window, or at a
fixed rate. Each report is built when it is sent, so `sent_at` is the moment it left the agent.
Prints a JSON summary; writes the message ids it had confirmed to the job's `ids_out`."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika

from services.agent.client import Identity, build_report
from services.bench import workload


async def publish(job: dict[str, Any]) -> dict[str, Any]:
    """Publish a phase's reports (signed for siloflow) with a window of confirms in flight."""
    identities = [
        Identity(uuid.UUID(i["host_id"]), base64.b64decode(i["host_key"]), int(i["key_version"]))
        for i in job["identities"]
    ]
    planned = (
        workload.warm_up(len(identities), job["warm_up"])
        if job.get("warm_up")
        else workload.plan(len(identities), int(job["count"]), int(job["seed"]))
    )
    packages = workload.packages_snapshot()
    rng = random.Random(int(job["seed"]) + 1)
    datas = [workload.data(p.kind, p.host_index, rng, packages) for p in planned]
    sign = bool(job.get("sign", True))
    rate = float(job.get("rate") or 0)
    window = asyncio.Semaphore(int(job.get("window", 500)))
    ids: list[str] = []

    connection = await aio_pika.connect(
        job["amqp_url"], client_properties={"connection_name": "bench publisher"}
    )
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(job["exchange"], ensure=False)
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []

        async def one(index: int) -> None:
            try:
                p = planned[index]
                identity = identities[p.host_index]
                report = build_report(
                    p.kind,
                    identity.host_id,
                    datas[index],
                    identity=identity if sign else None,
                )
                await exchange.publish(report.message(), routing_key=report.routing_key)
                ids.append(report.message_id)
            except BaseException as exc:  # reported below: a lost publish voids the run
                failures.append(exc)
            finally:
                window.release()

        started = time.time()
        start = loop.time()
        for index in range(len(planned)):
            if rate:
                delay = start + index / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await window.acquire()
            task = asyncio.create_task(one(index))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)
        finished = time.time()
    finally:
        await connection.close()
    if failures:
        raise RuntimeError(f"{len(failures)} publishes failed; first: {failures[0]!r}")
    await asyncio.to_thread(Path(job["ids_out"]).write_text, "\n".join(ids))
    return {"published": len(ids), "started": started, "finished": finished}


async def in_process(
    amqp_url: str,
    exchange: str,
    identities: list[Identity],
    *,
    count: int,
    rate: float,
    seed: int,
    sign: bool,
    window: int,
    workdir: Path,
    warm_up: str | None = None,
) -> dict[str, Any]:
    """Run the publisher as a process of its own (the agents are not the services' CPU) and
    return its summary with the set of message ids the broker confirmed. `warm_up`: one report
    of that kind per host instead of the planned mix (`count` is then ignored)."""
    job_path = workdir / f"publish-{seed}.json"
    ids_path = workdir / f"ids-{seed}.txt"
    job = {
        "amqp_url": amqp_url,
        "exchange": exchange,
        "identities": [
            {
                "host_id": str(i.host_id),
                "host_key": base64.b64encode(i.host_key).decode(),
                "key_version": i.key_version,
            }
            for i in identities
        ],
        "count": count,
        "rate": rate,
        "seed": seed,
        "sign": sign,
        "window": window,
        "warm_up": warm_up,
        "ids_out": str(ids_path),
    }
    await asyncio.to_thread(job_path.write_text, json.dumps(job))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.bench.publisher",
        str(job_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the publisher failed: {err.decode()[-2000:]}")
    summary: dict[str, Any] = json.loads(out)
    summary["ids"] = set((await asyncio.to_thread(ids_path.read_text)).split())
    return summary


def main() -> None:
    """`python -m services.bench.publisher JOB.json`: publish, print what was sent as JSON."""
    job = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(asyncio.run(publish(job))))


if __name__ == "__main__":
    main()
