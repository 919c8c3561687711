"""``python -m worker_entry job|service``."""

from __future__ import annotations

from worker_entry.cli import main

if __name__ == "__main__":
    main()
