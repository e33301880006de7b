# consent-service container image.
#
# Two stages: the first installs the service as the README does
# (`python3 -m venv` + `pip install .`), held to the versions pinned in
# constraints.txt (scripts/refresh-constraints) so that a rebuild gets what
# was tested, not the newest release of every dependency; the second copies that virtualenv
# onto a clean slim Python with no pip cache and no build files, and runs it
# as an unprivileged user. No Docker engine runs on the development machines:
# tests/deploy/test_dockerfile.py runs the build stage's steps in a fresh
# virtualenv and checks the result, so keep them plain RUN/COPY/ENV/WORKDIR.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY consent_service ./consent_service
RUN python3 -m venv "$VIRTUAL_ENV"
RUN "$VIRTUAL_ENV/bin/pip" install --constraint constraints.txt .

FROM ${PYTHON_IMAGE} AS runtime
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# uid/gid 10001 match the helm chart's runAsUser/runAsGroup. The working
# directory holds the embedded SQLite database when run without PostgreSQL.
RUN groupadd --system --gid 10001 consent \
    && useradd --system --uid 10001 --gid consent --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin consent \
    && install -d -o consent -g consent -m 0750 /var/lib/consent-service
COPY --from=build /opt/venv /opt/venv
WORKDIR /var/lib/consent-service
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["consent-service"]
CMD ["serve", "--bind", "0.0.0.0:8000"]
