"""The worker entrypoint: one Celery worker, run as a finite job or as a long-lived service."""
