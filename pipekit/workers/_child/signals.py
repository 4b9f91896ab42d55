"""How a worker process stops on a signal: SIGTERM (and, on Linux, its parent process's
death) cancels the trio run, a watchdog exits the process if that takes too long, and a
second signal exits at once.

On Linux the child stops (exit code 1) when its parent *process* dies. It uses
``PR_SET_PDEATHSIG``, which fires when the *thread* that forked the child ends - and a
parent may fork from a thread that ends long before it does (``trio.lowlevel.open_process``
forks from a cached worker thread that ends after 10 s idle; pipekit's own parents fork
from one thread that lives as long as they do, see ``pipekit.adapters.stdio._fork``, and
set SIGKILL, which this replaces). So the signal is a dedicated real-time one
(``SIGRTMIN + 2``), not SIGTERM, and it stops the child only if ``os.getppid()`` has
changed (the parent process is gone).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING

from .outcome import EXIT_FAILED, EXIT_TERMINATED

if TYPE_CHECKING:  # the blocking runtime imports this module without trio
    import trio

_WATCHDOG = 3.0  # seconds after SIGTERM before the process exits whatever it is doing


class RunState:
    """What the signal handlers need to reach the trio run (the blocking runtime uses
    only the flags and codes)."""

    def __init__(self) -> None:
        self.token: trio.lowlevel.TrioToken | None = None  # set while serving
        self._scope: trio.CancelScope | None = None
        self.running = False  # trio.run has been called and has not returned
        self.stopping = False
        self.lost = False
        self.exit_code = EXIT_TERMINATED
        self.parent_pid = os.getppid()

    @property
    def scope(self) -> trio.CancelScope:
        """Entered by the trio run; cancelled to stop it (made on first use)."""
        if self._scope is None:
            import trio

            self._scope = trio.CancelScope()
        return self._scope


state = RunState()
_PDEATH_SIGNAL: int | None = getattr(signal, "SIGRTMIN", None)
if _PDEATH_SIGNAL is not None:
    _PDEATH_SIGNAL += 2


def _watchdog(seconds: float, code: int) -> None:
    time.sleep(seconds)
    os._exit(code)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if signum == _PDEATH_SIGNAL and os.getppid() == state.parent_pid:
        return  # only the thread that spawned us ended, not the parent process
    if state.stopping:
        os._exit(state.exit_code)  # second signal: no more grace
    state.stopping = True
    if signum == _PDEATH_SIGNAL:
        state.exit_code = EXIT_FAILED
    if not state.running:
        raise SystemExit(state.exit_code)  # loading the target: stop right here
    token = state.token
    if token is not None:  # else the run is starting and checks `stopping` itself
        import trio  # a token means a trio run: loaded already

        with contextlib.suppress(trio.RunFinishedError):  # the run is ending anyway
            token.run_sync_soon(state.scope.cancel)
    _thread.start_new_thread(_watchdog, (_WATCHDOG, state.exit_code))


def install_signal_handlers() -> None:
    """SIGTERM -> graceful stop; on Linux, also stop when the parent process dies (see
    the module docstring for why that is not a plain ``PR_SET_PDEATHSIG`` SIGTERM)."""
    signal.signal(signal.SIGTERM, _on_signal)
    if _PDEATH_SIGNAL is None or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        signal.signal(_PDEATH_SIGNAL, _on_signal)
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, _PDEATH_SIGNAL, 0, 0, 0)
    except (OSError, AttributeError, ValueError):  # best effort
        return
    if os.getppid() != state.parent_pid:  # the parent died before prctl took effect
        raise SystemExit(EXIT_FAILED)
