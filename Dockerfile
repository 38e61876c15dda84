# syntax=docker/dockerfile:1
# One image for the three tracehook processes (docs/command-line.md); docker-compose.yml picks the command:
#   intake  : tracehook intake --host 0.0.0.0 --port 8000       (the default CMD)
#   worker  : celery -A workers worker --pool=prefork --concurrency 2 --loglevel INFO
#   sandbox : tracehook sandbox --host 0.0.0.0 --port 8081      (the RentVine API stand-in)
# No secret is baked in: the webhook signing secret (an environment variable, or a file in a volume)
# and the API key come from the environment at run time.

# ---------------------------------------------------------------------------------------------------------
# builder: wheels of the dependencies (one layer, cached until pyproject.toml changes), then of the project.
# ---------------------------------------------------------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Only pyproject.toml first: its [project].dependencies become a requirements list, so editing the code
# does not invalidate the (slow) dependency layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > requirements.txt \
    && pip wheel --wheel-dir /wheels/deps -r requirements.txt

# Then the code: a wheel of the project alone.
COPY README.md ./
COPY tracing/ tracing/
COPY workflows/ workflows/
COPY workers/ workers/
RUN pip wheel --no-deps --wheel-dir /wheels/app .

# ---------------------------------------------------------------------------------------------------------
# runtime: python:3.11-slim, no compilers, no wheels left behind, a non-root user.
# ---------------------------------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# uid/gid 10001; /data is where the sandbox keeps its SQLite file and /run/tracehook the generated webhook
# secret (a named volume mounted there inherits this ownership on first use).
RUN groupadd --system --gid 10001 tracehook \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin tracehook \
    && mkdir -p /app /data /run/tracehook \
    && chown 10001:10001 /data /run/tracehook

WORKDIR /app

# The wheels are bind-mounted from the builder, never copied: they do not end up in a layer.
RUN --mount=type=bind,from=builder,source=/wheels/deps,target=/tmp/wheels/deps \
    pip install --no-index --find-links /tmp/wheels/deps /tmp/wheels/deps/*.whl
RUN --mount=type=bind,from=builder,source=/wheels/app,target=/tmp/wheels/app \
    pip install --no-deps --no-index /tmp/wheels/app/*.whl

USER 10001:10001

# 8000 intake, 8081 sandbox, 9464 a worker's metrics (WORKER_METRICS_PORT)
EXPOSE 8000 8081 9464

CMD ["tracehook", "intake", "--host", "0.0.0.0", "--port", "8000"]
