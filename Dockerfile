# fileconsul in a slim image: it is built and installed under /install in one stage, and only
# the installed files are copied into the next, so no build tools nor wheels are left in the
# final image; it runs as a non-root user.
FROM python:3.11-slim AS build
ARG VERSION=0.1.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fileconsul ./fileconsul
# fileconsul's wheel and the wheels of everything it depends on, as pyproject.toml lists them,
# installed as they would be in the final image, but under /install.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && pip install --no-cache-dir --no-index --find-links /wheels --root /install "fileconsul==${VERSION}"

FROM python:3.11-slim
# A copy, not RUN --mount=type=bind,from=build: podman 4.3 (Debian 12) reuses such a step's
# cached layer after the stage changed, and cannot mount the stage when the stage is cached.
COPY --from=build /install /
RUN useradd --create-home --uid 10001 fileconsul \
    && mkdir /share && chown fileconsul /share
USER 10001
WORKDIR /share
ENTRYPOINT ["fileconsul"]
CMD ["--help"]
