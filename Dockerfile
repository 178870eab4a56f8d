# Ordo API image. Alone: `docker run -p 127.0.0.1:8000:8000 -v ordo-data:/data ordo` (SQLite in
# /data, migrated at start); with PostgreSQL and a worker: docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The client (with its `ordo` command) first: it changes less often than the service, so its
# layer stays cached. Its LICENSE is a link to the repository's.
COPY LICENSE ./
COPY client ./client
RUN pip install "./client[cli]"
# The service: one import package, ordo_server, with these folders mapped under it.
COPY pyproject.toml README.md ./
COPY ordo_server ./ordo_server
COPY app ./app
COPY solver ./solver
COPY models ./models
COPY migrations ./migrations
RUN pip install . && rm -rf /src/build

# `ordo serve` migrates the database before serving (deploy/docker-entrypoint.sh); other
# commands (`ordo worker`, `ordo admin rotate`) run as given.
COPY --chmod=0755 deploy/docker-entrypoint.sh /usr/local/bin/ordo-entrypoint

# The service never needs root. SQLite data lives in the /data volume unless ORDO_DATABASE_URL
# points elsewhere (compose points it at PostgreSQL); a named volume takes the directory's owner.
RUN useradd --create-home --uid 10001 --user-group ordo \
    && install -d -o ordo -g ordo /data
ENV ORDO_DATABASE_URL=sqlite:////data/ordo.sqlite
VOLUME ["/data"]
USER ordo
WORKDIR /data

EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/ordo-entrypoint"]
CMD ["ordo", "serve", "--host", "0.0.0.0", "--port", "8000"]
