# What a board does at power-on, after a reset or a deep-sleep wake: run boot.py, then main.py, from the current
# directory (the board's flash), each compiled from its file as the board's own start-up does. An exception
# leaves a real board at the REPL; here it ends the run with a "crash" line in board.log (the test decides
# whether to power-cycle).
import sys

import board


def _run(name):
    try:
        __import__(name)
    except SystemExit:
        raise
    except ImportError as exc:
        if name in str(exc):
            return  # no such file: a board skips it too
        raise
    except BaseException as exc:  # noqa: BLE001 - report like the REPL would
        sys.print_exception(exc)
        board.event("crash", name, repr(exc))
        raise SystemExit(1) from None
    finally:
        sys.modules.pop(name, None)


board.event("boot")
_run("boot")
_run("main")
board.event("returned")
