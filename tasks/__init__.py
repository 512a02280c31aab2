"""Celery task bodies: thin wrappers that validate a payload and call ``worker``."""
