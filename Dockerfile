# streamrec worker / CLI image. Used by docker-compose.yml; build it with
#   docker build -t streamrec:0.1.0 .
# Configure containers only with STREAMREC_<SECTION>__<KEY> variables (see
# config/streamrec.toml); to use a settings file instead, mount it and set
# STREAMREC_CONFIG=/path/to/streamrec.toml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU-only torch first, from PyTorch's index: `pip install .` then finds the
# requirement satisfied and does not pull the much larger CUDA build from PyPI.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/streamrec
# README.md* : the package's long description; the glob keeps the build working without it.
COPY pyproject.toml README.md* ./
COPY streamrec ./streamrec
RUN pip install . \
    && rm -rf /opt/streamrec/build /opt/streamrec/*.egg-info

# Unprivileged user; the state directory exists in the image with its owner so
# that a named volume mounted on it starts out writable by that user.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin streamrec \
    && mkdir -p /var/lib/streamrec \
    && chown streamrec:streamrec /var/lib/streamrec
USER streamrec
# No config/ directory here: settings come from defaults + STREAMREC_* variables.
WORKDIR /var/lib/streamrec
ENV STREAMREC_WORKER__DATA_DIR=/var/lib/streamrec

# 6066: the worker's HTTP server (recommendations and /metrics).
EXPOSE 6066
CMD ["streamrec", "--help"]
