# Dataflow Flex Template launcher for Novation (docs/dataflow.md: "Run on Dataflow").
# The launcher builds the job graph from the transfer config and submits it; workers install
# this project from the sdist Beam builds from setup.py (FLEX_TEMPLATE_PYTHON_SETUP_FILE).
# One image per entry point: main.py (novation run, the default) or, built with
# --build-arg ENTRY=stream.py, stream.py (novation stream, a streaming job).
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:latest

ARG WORKDIR=/template
ARG ENTRY=main.py
WORKDIR ${WORKDIR}

COPY setup.py README.md ./
COPY pipelines pipelines
COPY transforms transforms
COPY schemas schemas
COPY config config
COPY dataflow/main.py main.py
COPY dataflow/stream.py stream.py

# The launcher needs Beam's GCP I/O, Cloud KMS (gcp-kms:// keyrings) and `build` for the sdist.
RUN pip install --no-cache-dir '.[gcp]'

ENV FLEX_TEMPLATE_PYTHON_PY_FILE=${WORKDIR}/${ENTRY}
ENV FLEX_TEMPLATE_PYTHON_SETUP_FILE=${WORKDIR}/setup.py
