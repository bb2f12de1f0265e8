"""Containers' output as CRI log files, the format kwok serves to `kubectl logs [--previous]`."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import IO

CRI_LINE_BYTES = 16 * 1024  # containerd's longest log line; longer ones are split
LOG_ROTATE_BYTES = 10 * 2**20  # kubelet's containerLogMaxSize default


def copy_cri_log(pipe: IO[bytes], stream: str, out: IO[bytes], lock: threading.Lock) -> None:
    """Copy a container's output into its log file in the CRI format kwok serves to `kubectl logs`.

    As containerd does, a line longer than 16 KiB is split into partial (P) lines; as kubelet does,
    a log past 10 MiB is rotated, and `kubectl logs` shows only what came since. Endless output
    takes neither the runtime's memory nor the machine's disk.
    """
    while chunk := pipe.readline(CRI_LINE_BYTES):
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        whole = chunk.endswith(b"\n")
        with lock:
            if out.tell() > LOG_ROTATE_BYTES:
                out.seek(0)
                out.truncate()
            out.write(
                f"{stamp} {stream} {'F' if whole else 'P'} ".encode()
                + chunk.removesuffix(b"\n")
                + b"\n"
            )
            out.flush()
