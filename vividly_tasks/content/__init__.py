"""The content domain: requests, their status machine, lesson generation, video, storage.

Nothing here imports Celery; ``vividly_tasks.tasks`` turns it into tasks.
"""
