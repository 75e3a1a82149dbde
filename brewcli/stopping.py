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
        self.signum, self.decided, self._previous = 0, False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.decided:  # already stopping, saved or saving (torchrun signals the others once one exits)
            return
        if self.signum:
            raise Stopped(signum, f"{signal.Signals(signum).name} again: stopped at once, mid-step; the steps since "
                          "the last checkpoint are not saved (continue from it with --resume)")
        self.signum = signum

    def agreed(self, acc) -> int:
        """The signal any process received (0: none). Under several processes a max all-reduce at each step
        boundary, so that every process stops after the same step."""
        if acc.num_processes == 1:
            self.decided = bool(self.signum)
            return self.signum
        import torch

        flag = torch.tensor([self.signum], device=acc.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        agreed = int(flag.item())
        self.signum = max(self.signum, agreed)  # one that came during the all-reduce is agreed on at the next step
        self.decided = bool(agreed)
        return agreed

    @staticmethod
    def name(signum: int) -> str:
        return signal.Signals(signum).name
