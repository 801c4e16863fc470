# The code-location image the Helm chart runs (deploy/k8s/values.yaml): Python, the CUDA build of the torch the
# tests run (TORCH_VERSION = the Makefile's TORCH_SPEC; PyPI's Linux x86_64 torch wheels are the CUDA builds and
# bring their CUDA libraries, the node brings the driver), this package installed non-editable with the [k8s] extra
# (dagster-k8s, dagster-postgres for the chart's Postgres instance), the presets inside the package and again in
# /opt/crrecon/configs, served by `dagster api grpc` on port 3030 as a non-root user (uid 10001; the chart's
# fsGroup 10001 lets it write the CRRECON_HOME volume). Every step pod of the k8s executor runs this same image
# (training steps on a GPU node). Build, push and point the chart at it: docs/scaling.md.
FROM python:3.12-slim

ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 CRRECON_HOME=/data/crrecon

RUN pip install "torch==${TORCH_VERSION}" \
    && python -c "import torch; assert torch.version.cuda, 'torch ' + torch.__version__ + ' is not a CUDA build'"

# the source is only needed to build the wheel: installed non-editable, then removed (nothing shadows site-packages)
COPY pyproject.toml setup.cfg README.md /tmp/src/
COPY crrecon_pipeline /tmp/src/crrecon_pipeline
RUN pip install "/tmp/src[k8s]" && rm -rf /tmp/src \
    && python -c "import torch, dagster_postgres, dagster_k8s, crrecon_pipeline.definitions; \
from crrecon_pipeline.train.config import load_config; load_config('default'); \
assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', torch.__version__"

RUN useradd --uid 10001 --user-group --create-home --home-dir /home/crrecon crrecon \
    && mkdir -p /opt/crrecon /data/crrecon && chown -R 10001:10001 /opt/crrecon /data
WORKDIR /opt/crrecon
COPY --chown=10001:10001 crrecon_pipeline/presets ./configs
USER 10001
EXPOSE 3030
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "--module-name", "crrecon_pipeline.definitions"]
