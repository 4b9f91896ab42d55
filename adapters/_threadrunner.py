"""Plain worker threads for the thread adapter: started, reported to trio when each
ends, interrupted through their ports' lanes and joined within a grace period."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable

import trio

from ..kernel.lane import Lane

__all__ = ["Interrupt", "ThreadRunner"]


class Interrupt(threading.Event):
    """A runner's interrupt flag: a :class:`threading.Event` whose state is also the
    plain attribute :attr:`raised`, which a thread port reads on every ``send``
    (``is_set()`` is a Python call: ~470 instructions, a tenth of a port's per-message
    cost)."""

    def __init__(self) -> None:
        super().__init__()
        self.raised = False  # an instance attribute: found at once, not via the class

    def set(self) -> None:
        self.raised = True
        super().set()


class ThreadRunner:
    """Starts plain threads, signals trio when each ends, and joins them on exit."""

    def __init__(self, name: str, grace: float) -> None:
        self.name = name
        self.grace = grace
        self.abort = Interrupt()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._running = 0
        self._all_done = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._lanes: list[Lane] = []
        self._hooks: list[Callable[[], None]] = []
        self._hook_lock = threading.Lock()

    def on_interrupt(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (from the trio thread) when interrupted; at once if already."""
        with self._hook_lock:
            if not self.abort.is_set():
                self._hooks.append(hook)
                return
        hook()

    def watch(self, *lanes: Lane) -> None:
        """Lanes to wake on interrupt, so blocked threads notice ``abort``."""
        self._lanes.extend(lanes)

    def start(self, target: Callable[[], None], label: str) -> None:
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # delivered to the trio side
                if not (self.abort.is_set() and isinstance(exc, trio.ClosedResourceError)):
                    self._errors.append(exc)
            finally:
                with contextlib.suppress(trio.RunFinishedError):
                    self._token.run_sync_soon(self._one_done)

        thread = threading.Thread(target=body, name=f"pipekit:{self.name}:{label}", daemon=True)
        self._running += 1
        self._threads.append(thread)
        thread.start()

    def _one_done(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._all_done.set()

    async def wait(self) -> None:
        """Wait for every thread; re-raise the first error one of them raised."""
        if self._running:
            await self._all_done.wait()
        else:
            await trio.lowlevel.checkpoint()
        self._join()
        if self._errors:
            raise self._errors[0]

    def interrupt(self) -> None:
        with self._hook_lock:
            self.abort.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()
        for lane in self._lanes:
            lane.wake_all()

    async def shutdown(self) -> None:
        """Interrupt, then join the threads for at most ``grace`` seconds (shielded)."""
        self.interrupt()
        if self._running:
            with trio.CancelScope(shield=True), trio.move_on_after(self.grace):
                await self._all_done.wait()
        if self._running:
            warnings.warn(
                f"{self._running} thread(s) of module {self.name!r} did not stop within "
                f"{self.grace} s of being interrupted and were abandoned",
                RuntimeWarning,
                stacklevel=2,
            )
        self._join()

    def _join(self) -> None:
        for t in self._threads:
            if not t.is_alive() or self._running == 0:
                t.join(timeout=self.grace)
