# ckpt-compat: CPU-only image. Build: docker build -t ckpt-compat .
FROM python:3.11-slim

# CPU wheels of torch/torchvision; point at a mirror if needed.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CKPT_COMPAT_DATA_DIR=/data

WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY ckpt_compat_client ./ckpt_compat_client
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" ".[fleet]" \
    && useradd --create-home --uid 10001 ckpt \
    && mkdir -p /data /shared && chown ckpt:ckpt /data /shared

USER ckpt
VOLUME ["/data"]
EXPOSE 8000
# /livez answers while the process serves; the slim image has no curl, so Python asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=4)"]
CMD ["ckpt-compat", "serve", "--host", "0.0.0.0", "--port", "8000"]
