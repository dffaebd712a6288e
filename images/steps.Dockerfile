# The steps image: the grace-pipeline package and its CLI, nothing else.
# Build from the repository root:  docker build -f images/steps.Dockerfile -t grace-pipeline-steps .
# Two stages so that compilers (llama-cpp-python builds from source) stay out of the final image.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"
# llama.cpp compiles for ~5 minutes: its own layer (pinned as in pyproject.toml), so a code change rebuilds in seconds.
RUN pip wheel --no-cache-dir --wheel-dir /wheels "llama-cpp-python==0.3.36"
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY steps steps
COPY schemas schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels --find-links /wheels .

FROM ${PYTHON_IMAGE}
# llama.cpp (the embedded CPU model: the first cluster run, -p models=gemma-3-270m) loads libgomp.so.1 (OpenMP)
# at run time; python:*-slim does not ship it (it comes with gcc in the build stage only).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --uid 10001 --create-home grace
USER 10001
WORKDIR /home/grace
# The build fails here, not on the cluster, when a runtime library is missing: import the native module
# and run the CLI as the workflow does.
RUN python -c "import llama_cpp, llama_cpp.llama_cpp" && grace-pipeline --version
ENTRYPOINT ["grace-pipeline"]
CMD ["--help"]
