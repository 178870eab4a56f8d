# Ordo API image: `docker compose up` runs it with PostgreSQL (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The client first: it changes less often than the service, so its layer stays cached.
COPY client ./client
RUN pip install ./client
COPY pyproject.toml README.md ./
COPY app ./app
COPY solver ./solver
COPY models ./models
COPY migrations ./migrations
RUN pip install . && rm -rf /src/build

# The service never needs root. Its working directory is where a default SQLite file would go.
RUN useradd --create-home --uid 10001 --user-group ordo \
    && install -d -o ordo -g ordo /var/lib/ordo
USER ordo
WORKDIR /var/lib/ordo

EXPOSE 8000
CMD ["ordo", "serve", "--host", "0.0.0.0", "--port", "8000"]
