# One image for the services of the stack (simulator, bridge, ml train, ml predict, dashboard); the compose file
# and the Kubernetes manifests pick the service with the command, e.g. `python -m bridge` (or its console script,
# `car-bridge`: docs/contracts.md).
#
#   docker build -t car-stream-ml:0.1.0 .
#   docker run --rm car-stream-ml:0.1.0 car-simulator --help
#
# The project is installed like any wheel: its packages, the Avro schemas among them (package data), go to
# site-packages; no source folder and no PYTHONPATH. Which packages it holds is pyproject.toml's to say
# (packages.find): a new product package needs no line here.
#
# Python 3.11: tensorflow-io 0.37.1 (its last release) needs TensorFlow 2.16 and Python < 3.13, and
# requirements.lock is resolved for 3.11.
#
# PYTHON_IMAGE replaces the base (`make images` builds one from Debian's packages where Docker Hub cannot be
# reached). A CA bundle for pip, where TLS to the package index goes through a proxy of the network's own, is
# passed as a build secret (`--secret id=pip_cert,src=...`): it is used by pip only and never stored in a layer.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE} AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The wheel, in a stage of its own: the image gets the installed packages, never a copy of the sources.
FROM base AS wheel
WORKDIR /src
COPY pyproject.toml ./
# The dependency list alone, for the image's dependency layer: an edit elsewhere in pyproject.toml (a package, a tool
# setting) leaves it unchanged, so TensorFlow is not installed again.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /requirements.txt
# .dockerignore keeps the checkout's tooling, tests and local state out of the context.
COPY . ./
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip wheel --no-deps --wheel-dir /wheels .

FROM base
# The dependencies first, in their own layer, pinned to the lock file: TensorFlow is large, and this layer is
# rebuilt only when the dependency list or requirements.lock change, not on every code change.
RUN --mount=type=secret,id=pip_cert \
    --mount=type=bind,from=wheel,source=/requirements.txt,target=/tmp/requirements.txt \
    --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install -c /tmp/requirements.lock -r /tmp/requirements.txt
# The project itself, without the dev extras; its dependencies are the layer above.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/tmp/wheels \
    pip install --no-deps /tmp/wheels/car_stream_ml-*.whl

ENV ML_MODEL_DIR=/models
# Empty: what runs comes from site-packages.
WORKDIR /app

RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /models /data \
    && chown app:app /models /data
USER app

# Prometheus metrics: bridge 9108, predictor 9109; the dashboard's page: 8050.
EXPOSE 9108 9109 8050

CMD ["car-bridge", "--help"]
