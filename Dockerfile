# fileconsul in a slim image: the wheel is built in one stage and installed in the next,
# so no build tools are left in the final image; it runs as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fileconsul ./fileconsul
# fileconsul's wheel and the wheels of everything it depends on, as pyproject.toml lists them.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ARG VERSION=0.1.0
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "fileconsul==${VERSION}" \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 fileconsul \
    && mkdir /share && chown fileconsul /share
USER 10001
WORKDIR /share
ENTRYPOINT ["fileconsul"]
CMD ["--help"]
