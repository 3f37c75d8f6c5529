# datagen service image: CLI, API and the embedded model (CPU). Build: docker build -t datagen .
FROM python:3.11-slim
WORKDIR /app
COPY . /app
# CPU torch from the PyTorch CPU index keeps the image small. llama.cpp is only a test server: not in the image.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -e ".[local,postgres]"
ENV DATAGEN_CACHE=/data/cache
VOLUME /data
ENTRYPOINT ["datagen"]
