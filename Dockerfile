# The image every vlkd job runs in, on KubeRay (head, workers and submitter) or any Ray cluster.
# Base: the official Ray image of exactly the Ray version pinned in pyproject.toml, Python 3.11, CUDA 12.8, by digest:
# a tag can be pushed again, a digest names one image. Give the digest when building; read it from the registry with
#   docker buildx imagetools inspect rayproject/ray:2.60.0-py311-cu128     (its "Digest:" line), then
#   docker build --build-arg RAY_IMAGE_DIGEST=sha256:... .
# Every package it installs is pinned: image-requirements.txt by version and hash, torch by version (its CUDA build
# comes from PyTorch's index and pins its CUDA libraries), vlkd from this source tree.
# No credentials are baked in: jobs get S3 access from a Kubernetes Secret or the pods' workload identity at run time.
#checkov:skip=CKV_DOCKER_2:KubeRay probes the Ray containers and Kubernetes ignores HEALTHCHECK
ARG RAY_IMAGE_DIGEST
FROM rayproject/ray:2.60.0-py311-cu128@${RAY_IMAGE_DIGEST}

# The Ray image lets its user `ray` run anything as root with no password (ray-project/ray docker/base-deps/Dockerfile:
# `usermod -aG sudo ray`, `ray ALL=NOPASSWD: ALL` in /etc/sudoers). Take both away: ray has no password, so sudo
# then refuses it.
USER root
RUN sed -i '/NOPASSWD/d' /etc/sudoers && rm -f /etc/sudoers.d/* && gpasswd --delete ray sudo

# The Ray image's own non-root user (uid 1000), which owns its Python environment.
USER ray

# preprocess's `decoder: cuda` (NVDEC) needs the driver's video library (libnvcuvid), which the NVIDIA container
# runtime mounts only for the `video` capability; the CUDA base images ask for compute and utility alone.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,video

WORKDIR /home/ray/vlkd-src
COPY --chown=ray:users image-requirements.txt ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r image-requirements.txt
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu128 "torch==2.13.0+cu128"

COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users lib ./lib
COPY --chown=ray:users cli ./cli
COPY --chown=ray:users jobs ./jobs
# Its dependencies are all installed above; setuptools (pinned there) builds it.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && vlkd --version

WORKDIR /home/ray
