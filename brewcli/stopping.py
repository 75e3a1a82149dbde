"""Stopping a run between optimizer steps. While `fit` runs, SIGTERM (a scheduler's preemption) and SIGINT
(Ctrl-C) only ask the loop to stop; it stops after the step under way, where process 0 saves a resumable
checkpoint, and the command exits with 128 + the signal's number. A second signal stops at once, unsaved."""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A run stopped by a signal (a BaseException, as KeyboardInterrupt: no `except Exception` swallows it)."""

    def __init__(self, signum: int, message: str | None = None):
        self.signum, self.message = signum, message
        super().__init__(message or signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequests:
    """Catches SIGTERM and SIGINT while active (in the main thread) and restores the previous handlers after."""

    def __init__(self):
        self.signum, self._previous = 0, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum:
            raise Stopped(signum, f"{signal.Signals(signum).name} again: stopped at once, mid-step; the steps since "
                          "the last checkpoint are not saved (continue from it with --resume)")
        self.signum = signum

    def agreed(self, acc) -> int:
        """The signal any process received (0: none). Under several processes a max all-reduce at each step
        boundary, so that every process stops after the same step."""
        if acc.num_processes == 1:
            return self.signum
        import torch

        flag = torch.tensor([self.signum], device=acc.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self.signum = int(flag.item())
        return self.signum

    @staticmethod
    def name(signum: int) -> str:
        return signal.Signals(signum).name
