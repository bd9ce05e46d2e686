# One image for the services of the stack (simulator, bridge, ml train, ml predict, dashboard); the compose file
# and the Kubernetes manifests pick the service with the command, e.g. `python -m bridge`.
#
#   docker build -t car-stream-ml:0.1.0 .
#   docker run --rm car-stream-ml:0.1.0 python -m simulator --help
#
# Python 3.11: tensorflow-io 0.37.1 (its last release) needs TensorFlow 2.16 and Python < 3.13, and
# requirements.lock is resolved for 3.11.
#
# PYTHON_IMAGE replaces the base (`make images` builds one from Debian's packages where Docker Hub cannot be
# reached). A CA bundle for pip, where TLS to the package index goes through a proxy of the network's own, is
# passed as a build secret (`--secret id=pip_cert,src=...`): it is used by pip only and never stored in a layer.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# The dependencies first, in their own layer: TensorFlow is large, and this layer is rebuilt only when
# pyproject.toml or requirements.lock change, not on every code change.
COPY pyproject.toml requirements.lock ./
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c requirements.lock -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# README.md only now (pyproject names it): editing the docs must not reinstall the dependencies.
COPY README.md ./
COPY schemas/ schemas/
COPY common/ common/
COPY simulator/ simulator/
COPY bridge/ bridge/
COPY ml/ ml/
COPY dashboard/ dashboard/
COPY admin/ admin/
# The project itself, pinned to the lock file, without the dev extras.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install -c requirements.lock .

# The services import the packages from /app (not from the installed copy) because common/schemas.py reads
# the Avro schemas from schemas/ next to the packages.
ENV PYTHONPATH=/app \
    ML_MODEL_DIR=/models

RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /models /data \
    && chown app:app /models /data
USER app

# Prometheus metrics: bridge 9108, predictor 9109; the dashboard's page: 8050.
EXPOSE 9108 9109 8050

CMD ["python", "-m", "bridge", "--help"]
