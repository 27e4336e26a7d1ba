# One image for every Coffer service; docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 coffer
WORKDIR /app
COPY pyproject.toml README.md ./
COPY wallet ./wallet
COPY signer ./signer
COPY ledger ./ledger
COPY matcher ./matcher
COPY watchers ./watchers
COPY api ./api
COPY coffer ./coffer
RUN pip install --no-cache-dir '.[server]'
USER coffer
ENTRYPOINT ["coffer"]
