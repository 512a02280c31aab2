# One image for the worker, beat, flower and the sandbox.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY tasks ./tasks
RUN pip install --no-cache-dir '.[flower]'
RUN useradd --create-home entity-sync
USER entity-sync
ENV ENTITY_SYNC_STORE_URL=postgresql://entity_sync:entity_sync@postgres:5432/entity_sync
CMD ["celery", "-A", "worker", "worker", "--loglevel=INFO", "-Q", "sync_manual,sync,backfill,notify,housekeeping"]
