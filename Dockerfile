# One image for every service (`serve --target ...`), `migrate` and the operator commands.
# Any Debian-like base with python3 (>= 3.11) and its venv module will do; both stages must use
# the same one, since the venv's interpreter is the base's python3.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# The Makefile's uv (tests/deploy/test_image.py checks that the two agree).
ARG UV_VERSION=0.13.9
# Bytecode checked against the source's hash, not its mtime, which image layers may round.
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    PYC_INVALIDATION_MODE=CHECKED_HASH \
    UV_LINK_MODE=copy \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never
# uv in a venv of its own: Debian's python3 has no pip, and nothing of it reaches the final stage.
RUN --mount=type=cache,target=/root/.cache \
    python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --disable-pip-version-check "uv==${UV_VERSION}"
WORKDIR /src
# The locked dependencies first, so that this layer is rebuilt only when uv.lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache \
    /opt/uv/bin/uv sync --locked --no-dev --no-install-project
COPY README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache \
    /opt/uv/bin/uv sync --locked --no-dev --no-editable

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
# The root filesystem may be read-only: no bytecode written at run time (it is compiled in the
# venv), and HOME on /tmp, the one writable folder (an emptyDir in Kubernetes).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65534:65534
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["expensetracker"]
# `serve` listens on 127.0.0.1 unless told otherwise.
CMD ["serve", "--target", "all", "--host", "0.0.0.0", "--port", "8000"]

# Last, since they change with every build.
ARG VERSION=""
ARG REVISION=""
ARG CREATED=""
ARG SOURCE=""
LABEL org.opencontainers.image.title="ExpenseTracker" \
      org.opencontainers.image.description="Self-hosted expense tracker: Python microservices on PostgreSQL." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
