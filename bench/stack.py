"""What both sides run against, started once per benchmark run on 127.0.0.1 in the harness process.

A moto server (DynamoDB and S3), the fake deployment service and the scripted fake LLM. Each side
runs in its own process (`bench.ours_worker` in the product's venv, `bench.peers.langgraph_worker`
in bench/.venv) and reaches these over loopback HTTP, so both pay the same network and moto costs.
"""

from __future__ import annotations

import gc
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
from moto.server import ThreadedMotoServer

from bench.fake_llm import fake_llm
from twelvefactor.local.fake_openai import FakeOpenAI
from twelvefactor.local.fake_services import run_fake_services
from twelvefactor.local.template import load_template, table_definition

REGION = "us-east-1"
# moto accepts any credentials; fixed ones keep boto3 from looking for real ones.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class Stack:
    aws_url: str
    llm: FakeOpenAI
    services_url: str

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.aws_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def resource(self, service: str) -> Any:
        return boto3.resource(
            service,
            endpoint_url=self.aws_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def new_tables(self) -> dict[str, str]:
        """An emptied moto with fresh tables (and a bucket), for one side's measurement.

        Emptied because moto's TransactWriteItems deep-copies every table it holds (to roll back
        on failure), so its cost grows with all the data stored so far, the other side's included;
        DynamoDB's does not. Every measurement starts from the same empty service.
        """
        httpx.post(f"{self.aws_url}/moto-api/reset", timeout=30).raise_for_status()
        suffix = uuid.uuid4().hex[:8]
        ours, peer, bucket = f"threads-{suffix}", f"checkpoints-{suffix}", f"payloads-{suffix}"
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(**table_definition(load_template(), "ThreadsTable", ours))
        # The key schema langgraph-checkpoint-aws documents for its DynamoDBSaver table.
        dynamodb.create_table(
            TableName=peer,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[
                {"AttributeName": "PK", "KeyType": "HASH"},
                {"AttributeName": "SK", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "PK", "AttributeType": "S"},
                {"AttributeName": "SK", "AttributeType": "S"},
            ],
        )
        self.client("s3").create_bucket(Bucket=bucket)
        return {"ours": ours, "peer": peer, "bucket": bucket}

    def environment(self, tables: dict[str, str]) -> dict[str, str]:
        """What a worker process gets: both sides' settings, pointed at this stack."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.aws_url,
            "OPENAI_BASE_URL": self.llm.base_url,
            "OPENAI_API_KEY": "bench",
            "LLM_MODEL": "fake-model",
            "DEPLOY_SERVICE_URL": self.services_url,
            "DEPLOYBOT_SERVICE_URL": self.services_url,
            "THREADS_TABLE": tables["ours"],
            "PAYLOAD_BUCKET": tables["bucket"],
            "CHECKPOINT_TABLE": tables["peer"],
            "POWERTOOLS_SERVICE_NAME": "bench",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "bench",
            # LangSmith tracing stays off: the peer is measured as it runs in production, untraced.
            "LANGSMITH_TRACING": "false",
        }


@contextmanager
def running_stack() -> Iterator[Stack]:
    # moto's server logs every request it serves; the figures are the output here.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with ExitStack() as stack:
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        llm = stack.enter_context(fake_llm())
        services_url = stack.enter_context(run_fake_services())
        yield Stack(aws_url=f"http://{host}:{port}", llm=llm, services_url=services_url)


@dataclass
class CollectorPauses:
    """The full (generation 2) garbage collections the harness process ran during one measurement."""

    seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        longest = max(self.seconds, default=0.0)
        return {"count": len(self.seconds), "total": sum(self.seconds), "longest": longest}


@contextmanager
def quiet_collector() -> Iterator[CollectorPauses]:
    """Start a measurement with the stand-ins' garbage collected and the survivors frozen.

    moto, the fake LLM and the fake service answer from this process, so a full collection here
    stalls whichever request is in flight: it walked every object the process held (moto's modules,
    everything the previous runs left), up to about 0.1 s on this machine, long enough to become a
    side's p95 by landing in two or three of its turns. Collecting and freezing first (`gc.freeze`)
    leaves only what this measurement allocates for a collection to walk; the pauses still taken
    are recorded so each figure can show them.
    """
    frozen_by_others = gc.get_freeze_count() > 0
    gc.collect()
    gc.freeze()
    pauses = CollectorPauses()
    started: list[float] = []

    def on_collection(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            pauses.seconds.append(time.perf_counter() - started.pop())

    gc.callbacks.append(on_collection)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(on_collection)
        # Back into the collector's care, so garbage the frozen objects become is found next time
        # (unless something else froze objects first: `gc` cannot tell whose they are).
        if not frozen_by_others:
            gc.unfreeze()


def worker_environment(extra: dict[str, str]) -> dict[str, str]:
    """The harness's environment (PATH, HOME) with the stack's settings; no AWS profile leaks in."""
    keep = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "OPENAI_"))}
    return {**keep, **extra}
