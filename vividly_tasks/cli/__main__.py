"""``python -m vividly_tasks.cli`` is ``vividly``."""

from vividly_tasks.cli import main

main()
