"""The chipclear worker process: `python worker.py` (or `chipclear worker`), until SIGINT/SIGTERM.

Configuration comes from the environment (chipclear.config). What the worker registers and how it runs
live in `chipclear.worker`; this file is only the process entry.
"""

from chipclear.worker import main

if __name__ == "__main__":
    main()
