"""Helper: run a long moecover call in a child process, send SIGINT, time how fast it stops."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

CHILD = """
import sys, time
{setup}
print("ready", flush=True)
started = time.perf_counter()
try:
    {call}
except KeyboardInterrupt:
    {after}
    print("interrupted", flush=True)
    sys.exit(0)
print("finished after", time.perf_counter() - started, flush=True)
sys.exit(3)
"""


def with_default_sigint() -> None:
    """`preexec_fn` for a child that must see Ctrl-C: Python turns SIGINT into KeyboardInterrupt
    only if it starts with the default action, and a test run started as a background job of a
    shell without job control has SIGINT ignored, which children inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def seconds_to_stop(setup: str, call: str, delay: float = 0.5, after: str = "pass") -> float:
    """Seconds between SIGINT and the child reporting KeyboardInterrupt; fails if it never does.
    `after` (one statement, e.g. an assert) runs in the child once the call has been interrupted."""
    code = CHILD.format(setup=textwrap.dedent(setup), call=call, after=after)
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=with_default_sigint,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        try:
            ready = child.stdout.readline().strip()
            assert ready == "ready", child.stderr.read()
            time.sleep(delay)
            sent = time.perf_counter()
            child.send_signal(signal.SIGINT)
            line = child.stdout.readline().strip()
            stopped = time.perf_counter()
            child.wait(timeout=30)
        finally:
            child.kill()
        assert line == "interrupted", f"child said {line!r}; stderr: {child.stderr.read()}"
    return stopped - sent
