"""Stopping child processes that lead their own process group (servers, instances)."""

import os
import signal
import subprocess


def stop_process_group(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM to the whole group (children stop with their leader), SIGKILL if it outlives `timeout`."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
