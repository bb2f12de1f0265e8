"""The grader's kernel client.

Ready as soon as its kernel has answered kernel_info on both channels.

jupyter_client's own client, once the reply has come, also waits for 0.2 s of silence on IOPub to
flush what the kernel sent meanwhile. A graded submission starts a kernel per notebook, seven in
all, so that silence cost 1.4 s of each. Here the IOPub wait ends at the kernel's `idle` status for
that very request, the last message the kernel sends for it. Nothing older can reach a cell's
outputs either way: nbclient takes only messages whose parent is its own request.
"""

from __future__ import annotations

import time
from queue import Empty

from jupyter_client.asynchronous import AsyncKernelClient

# As jupyter_client: without an IOPub message by then, its subscription is not up yet: ask again.
IOPUB_CONNECTED_WITHIN = 0.2


class ReadyKernelClient(AsyncKernelClient):
    """An AsyncKernelClient whose `wait_for_ready` ends at the kernel's answer, not a pause."""

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while True:
            request = self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
            except Empty:
                reply = None
            if (
                reply
                and reply["msg_type"] == "kernel_info_reply"
                and await self._idle_after(request)
            ):
                self._handle_kernel_info_reply(
                    reply
                )  # jupyter_client's own: adapts to the kernel's protocol
                return
            if not await self.is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")

    async def _idle_after(self, request: str) -> bool:
        """Whether IOPub brings the kernel's `idle` for `request` in time, i.e. it is subscribed."""
        until = time.monotonic() + IOPUB_CONNECTED_WITHIN
        while (left := until - time.monotonic()) > 0:
            try:
                message = await self.iopub_channel.get_msg(timeout=left)
            except Empty:
                return False
            if (
                message["msg_type"] == "status"
                and message["parent_header"].get("msg_id") == request
                and message["content"].get("execution_state") == "idle"
            ):
                return True
        return False
