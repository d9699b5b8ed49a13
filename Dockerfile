# specmill: the gateway and the workers, one image (the command picks the role).
# Used by docker-compose.temporal.yml; not built by CI (no Docker engine), linted by tests/test_compose.py.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml ./
COPY api ./api
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY models ./models
COPY store ./store
COPY knowledge ./knowledge
COPY codegen ./codegen
COPY sandbox ./sandbox
COPY infra ./infra
# The CPU build of torch keeps the image small; for a GPU image drop the extra index.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu . \
 && useradd --system --uid 10001 --create-home --home-dir /home/specmill specmill \
 && chown specmill /app

# Everything runs as this unprivileged user, except the integration worker: its sandbox gives each test
# run a uid of its own and a cgroup, which needs root in the container (docker-compose.temporal.yml).
USER 10001
EXPOSE 8080
CMD ["specmill", "serve", "gateway", "--host", "0.0.0.0", "--port", "8080"]
