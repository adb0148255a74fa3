# syntax=docker/dockerfile:1
# Same install steps as CI (.ci/run -> make): a venv with `pip install .`.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY rules ./rules
RUN python -m venv /venv && /venv/bin/pip install --quiet .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 railguard \
    && useradd --system --uid 10001 --gid 10001 --home /app railguard \
    && mkdir -p /data /app && chown 10001:10001 /data /app
COPY --from=build /venv /venv
COPY --chown=10001:10001 examples /app/examples
WORKDIR /app
USER 10001:10001
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import os,urllib.request;urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT','8080')}/healthz\",timeout=4)"]
ENTRYPOINT ["railguard"]
CMD ["run"]
