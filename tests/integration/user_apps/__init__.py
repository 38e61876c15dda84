"""Minimal Celery apps of users, each wired the way that user would wire tracehook (not ``workers.app``)."""
