"""An outside team's project on vividly-tasks: the README's "Use it in your own Celery app"."""
