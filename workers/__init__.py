"""The Celery app (``workers.app``), its tasks, and worker-process lifecycle."""
