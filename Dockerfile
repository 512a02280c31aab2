# One image for the worker, beat, flower, the dashboard and the receiver
# (docker-compose.yml runs each with its own command); the sandbox's image
# (target `sandbox`) is that one plus the test and demo harness (harness/),
# which the worker's image never holds.
FROM python:3.11-slim AS worker

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, read from pyproject.toml alone: this layer is rebuilt
# only when they change, not on every change to the source.
COPY pyproject.toml ./
RUN python -c "import subprocess, sys, tomllib; \
p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
subprocess.check_call([sys.executable, '-m', 'pip', 'install', \
    *p['dependencies'], *p['optional-dependencies']['flower']])"

# Then the package itself, without touching the dependencies again.
COPY README.md ./
COPY worker ./worker
COPY tasks ./tasks
RUN pip install --no-deps . && rm -rf build *.egg-info

# A non-root user; /app stays root-owned and read-only to it. Everything a
# process writes (beat's schedule, a SQLite store) goes to the data dir.
RUN useradd --system --uid 10001 --create-home --home-dir /home/entity-sync entity-sync \
    && mkdir -p /var/lib/entity-sync \
    && chown entity-sync:entity-sync /var/lib/entity-sync
USER entity-sync

# No credentials in the image: the store, Redis and secrets come from the
# environment (docker-compose.yml). Without them: a SQLite store in the data dir.
ENV ENTITY_SYNC_STORE_URL=sqlite:////var/lib/entity-sync/entity-sync.db

CMD ["celery", "-A", "worker", "worker", "--loglevel=INFO", "--pool=threads", \
     "--concurrency=16", "-Q", "sync_manual,sync,backfill,notify,housekeeping"]

# The simulated unified API for `docker compose up`: the worker's image plus
# the harness, installed from its own pyproject (harness/pyproject.toml).
FROM worker AS sandbox
USER root
COPY harness ./harness
RUN pip install --no-deps ./harness && rm -rf harness/build harness/*.egg-info
USER entity-sync
CMD ["python", "-m", "harness", "sandbox", "--host", "0.0.0.0", "--port", "8900"]

# The default target (a plain `docker build .`): the worker's image.
FROM worker
