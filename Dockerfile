# mbjax on an NVIDIA GPU (CUDA 12). Untested on the project's CI, which has no Docker
# engine; it installs the package through pyproject.toml so it cannot drift from it.
#   docker build -t mbjax .
#   docker run --gpus all --rm -v "$PWD/runs:/app/runs" mbjax            # main job
#   docker run --gpus all --rm mbjax python -m pytest -m "not slow"       # tests
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 MUJOCO_GL=egl
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3-pip libegl1 libgl1 \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# The pinned CUDA build of jax first, then the package (its pins match).
RUN pip install --no-cache-dir "jax[cuda12]==0.10.2"
COPY pyproject.toml README.md ./
COPY mbjax ./mbjax
RUN pip install --no-cache-dir ".[cuda,dev]"
COPY tests ./tests
COPY benchmarks ./benchmarks
COPY experiments ./experiments
CMD ["mbjax", "train"]
