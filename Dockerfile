# datagen service image: CLI, API and the embedded model (CPU). Build: docker build -t datagen .
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
# CPU torch from the PyTorch CPU index keeps the image small; llama.cpp built portable (see scripts/setup.sh).
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" \
    pip install --no-cache-dir "llama-cpp-python==0.3.36" \
 && pip install --no-cache-dir -e ".[local,postgres]"
ENV DATAGEN_CACHE=/data/cache
VOLUME /data
ENTRYPOINT ["datagen"]
