# The code-location image the Helm chart runs (deploy/k8s/values.yaml): a CUDA build of torch, this package
# installed non-editable with the [k8s] extra (dagster-k8s), the presets inside the package, served by
# `dagster api grpc` on port 3030. Build, push and point the chart at it: docs/scaling.md. Every step pod of the
# k8s executor runs this same image (training steps on a GPU node).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 CRRECON_HOME=/data/crrecon

# the source is only needed to build the wheel: installed non-editable, then removed (nothing shadows site-packages)
COPY pyproject.toml setup.cfg README.md /tmp/src/
COPY crrecon_pipeline /tmp/src/crrecon_pipeline
RUN pip install "/tmp/src[k8s]" && rm -rf /tmp/src \
    && python -c "import torch, crrecon_pipeline.definitions; from crrecon_pipeline.train.config import load_config; load_config('default')"

WORKDIR /opt/crrecon
COPY crrecon_pipeline/presets ./configs
EXPOSE 3030
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "--module-name", "crrecon_pipeline.definitions"]
