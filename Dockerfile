# The image every vlkd job runs in, on KubeRay (head, workers and submitter) or any Ray cluster.
# Base: the official Ray image of exactly the Ray version pinned in pyproject.toml, Python 3.11, CUDA 12.8.
# It has no torch: install the CUDA 12.8 wheel first, so that `pip install .` finds torch satisfied and never pulls
# another build. No credentials are baked in: jobs get S3 keys from a Kubernetes Secret at run time.
FROM rayproject/ray:2.60.0-py311-cu128

# The Ray image's own non-root user (uid 1000), which owns its Python environment.
USER ray

RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu128 "torch>=2.7"

WORKDIR /home/ray/vlkd-src
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users lib ./lib
COPY --chown=ray:users cli ./cli
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir . && vlkd --version

WORKDIR /home/ray
