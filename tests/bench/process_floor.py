"""The PSS floor of the design: the supervisor with its pre-fork imports and five forked processes
that do nothing but what every actor does (a zmq context and socket, one log line) plus importing
the third-party library their actor needs. No actor code runs. Run by scripts/bench-footprint in the
project venv: `python -m tests.bench.process_floor [module-for-each-of-the-five ...]`, prints
"<total MB> <supervisor MB> <child MB> ..." of one tree.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import time

import psutil

SETTLE_S = 4.0


def child(library: str) -> None:
    import zmq

    context = zmq.Context(io_threads=1)
    sock = context.socket(zmq.PUSH)
    sock.connect(f"ipc:///tmp/ccsa-floor-{os.getppid()}.sock")
    logging.getLogger("floor").info("up")
    if library != "-":
        importlib.import_module(library)
    while True:
        time.sleep(1)


def main(libraries: list[str]) -> None:
    import supervisor
    from actors.malloc_tuning import keep_big_blocks_out_of_the_heap

    keep_big_blocks_out_of_the_heap()
    for module in supervisor.SHARED_MODULES:
        importlib.import_module(module)
    gc.freeze()
    pids = []
    for library in libraries:
        pid = os.fork()
        if pid == 0:
            child(library)
        pids.append(pid)
    try:
        time.sleep(SETTLE_S)
        sizes = [psutil.Process(p).memory_full_info().pss / 2**20 for p in [os.getpid(), *pids]]
        print(" ".join(f"{s:.1f}" for s in [sum(sizes), *sizes]))
    finally:
        for pid in pids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main(sys.argv[1:])
