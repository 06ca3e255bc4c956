"""What a shard read on an S3 store costs a Ray task beyond the read itself: its storage arrives pickled, without a
boto3 client, and makes one.

    python -m bench.s3_reads [--reads 100] [--kib 256]

Each read unpickles an S3 storage, as a Ray Data read task does, and reads one object from a moto S3 server on
127.0.0.1, in this process, alternating between a new boto3 session per storage (the baseline: what every task did
before the process kept its session) and the process's session (`vlkd.storage.s3._session`). Reports CPU milliseconds
per read of each and their ratio.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import time
from collections.abc import Callable

from bench.common import machine
from vlkd.storage import S3Storage
from vlkd.storage import s3 as s3_storage


def cpu_ms_per_read(read: Callable[[], None], reads: int) -> float:
    read()  # the first read loads boto3's modules and, with a shared session, S3's service model
    start = time.process_time()
    for _ in range(reads):
        read()
    return (time.process_time() - start) / reads * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=100)
    parser.add_argument("--kib", type=int, default=256, help="size of the object each read gets")
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the server's line per request
    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        storage = S3Storage("vlkd-bench", "shards", endpoint_url=f"http://{host}:{port}", region="us-east-1")
        storage.client.create_bucket(Bucket="vlkd-bench")
        storage.write_bytes("shard.parquet", os.urandom(args.kib << 10))
        shipped = pickle.dumps(storage)

        def shared() -> None:
            pickle.loads(shipped).read_bytes("shard.parquet")

        def fresh() -> None:
            s3_storage._last_session = None  # as before: every storage made its own session
            shared()

        rates = {"new session per storage": [], "process's session": []}
        for _ in range(3):
            rates["new session per storage"].append(cpu_ms_per_read(fresh, args.reads))
            rates["process's session"].append(cpu_ms_per_read(shared, args.reads))
    finally:
        server.stop()
    print(f"machine: {machine()}")
    print(f"{args.reads} reads of {args.kib} KiB each, 3 rounds; CPU ms per read (client and moto server together)")
    for name, values in rates.items():
        print(f"  {name:24s} " + "  ".join(f"{v:6.1f}" for v in values))
    base, new = (min(v) for v in rates.values())
    print(f"ratio (best of each): {base / new:.1f}x less CPU per read")


if __name__ == "__main__":
    main()
