"""Ctrl-C (SIGINT) during a fit: noting one, and holding one back over a short critical section.

skorch ends training from a callback by raising ``KeyboardInterrupt``, the same exception that a
Ctrl-C raises, so the package tells the two apart by watching SIGINT itself. Both helpers act
only in the main thread (where Python runs signal handlers) and only over a handler written in
Python (the default one raises ``KeyboardInterrupt``); an ignored SIGINT, or the operating
system's default, is left alone.
"""

import signal
import threading
from contextlib import contextmanager


def _python_handler():
    """SIGINT's handler when it is a Python callable and this is the main thread, else None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGINT)
    return handler if callable(handler) else None


@contextmanager
def noted_interrupts():
    """Note a Ctrl-C (SIGINT) that arrives in the block; yields a dict whose 'interrupted' says.

    skorch's ``partial_fit`` swallows ``KeyboardInterrupt``, because that is also how a callback
    ends training, so a Ctrl-C stopped only the current fit: a grid search went on to the next.
    The fit keeps skorch's behaviour (training stops, the model is collected) and then raises
    ``KeyboardInterrupt`` when a real SIGINT was noted. Only when SIGINT has Python's default
    handler (one of the application's own decides for itself); that handler is chained and put
    back.
    """
    state = {"interrupted": False}
    previous = _python_handler()
    if previous is not signal.default_int_handler:
        yield state
        return

    def note(signum, frame):
        state["interrupted"] = True
        previous(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def deferred_interrupts():
    """Hold back a Ctrl-C (SIGINT) that arrives in the block until the block has run whole.

    For sections that take microseconds and must not stop half-way: the replay of a read's
    losses to the callbacks (`FullBatchNet`), where a ``KeyboardInterrupt`` out of one
    callback means that the callback stops training at that step. A SIGINT noted in the block
    reaches the handler that was in force (which raises ``KeyboardInterrupt`` for Python's
    default) when the block ends, once that handler is back, also when the block raises.
    """
    previous = _python_handler()
    if previous is None:
        yield
        return
    held = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            previous(*held[0])
