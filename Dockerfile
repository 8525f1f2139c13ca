# Dataflow Flex Template launcher for Novation (README: "Run on Dataflow").
# The launcher builds the job graph from the transfer config and submits it; workers install
# this project from the sdist Beam builds from setup.py (FLEX_TEMPLATE_PYTHON_SETUP_FILE).
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:latest

ARG WORKDIR=/template
WORKDIR ${WORKDIR}

COPY setup.py README.md ./
COPY pipelines pipelines
COPY transforms transforms
COPY schemas schemas
COPY config config
COPY dataflow/main.py main.py

# The launcher needs Beam's GCP I/O, Cloud KMS (gcp-kms:// keyrings) and `build` for the sdist.
RUN pip install --no-cache-dir '.[gcp]'

ENV FLEX_TEMPLATE_PYTHON_PY_FILE=${WORKDIR}/main.py
ENV FLEX_TEMPLATE_PYTHON_SETUP_FILE=${WORKDIR}/setup.py
