# The steps image: the grace-pipeline package and its CLI, nothing else.
# Build from the repository root:  docker build -f images/steps.Dockerfile -t grace-pipeline-steps .
# Two stages so that compilers (llama-cpp-python builds from source) stay out of the final image.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY steps steps
COPY schemas schemas
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --uid 10001 --create-home grace
USER 10001
WORKDIR /home/grace
ENTRYPOINT ["grace-pipeline"]
CMD ["--help"]
