# The control plane (web, private API, task worker) as deployed on Fly: see fly.toml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CLOUDCTL_STATE_DIR=/app/var DJANGO_SETTINGS_MODULE=cloudctl.settings
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY manage.py ./
COPY cloudctl ./cloudctl
COPY console ./console
COPY teams ./teams
COPY instances ./instances
COPY backups ./backups
COPY deploys ./deploys
COPY credentials ./credentials
COPY domains ./domains
COPY sso ./sso
COPY members ./members
COPY router ./router
COPY flyapi ./flyapi
# Static files are served by whitenoise. The throwaway keys and the in-memory database only exist for this build
# step: without them the settings would make a secret and a SQLite file in the state dir, shipped in the image.
RUN DJANGO_SECRET_KEY=collectstatic-only CLOUDCTL_TOKEN_KEYS=collectstatic-only DATABASE_URL=sqlite://:memory: \
    python manage.py collectstatic --noinput && rm -rf /app/var/secrets
RUN useradd --system --home /app cloudctl && chown -R cloudctl /app/var
USER cloudctl
EXPOSE 8000 8001
# Without fly.toml's process groups: the operator pages only (the default URL conf), like the `web` group. The
# private API is never served on a public address: see fly.toml's `private` group.
CMD ["gunicorn", "cloudctl.wsgi", "--bind", "0.0.0.0:8000", "--worker-class", "gthread", "--workers", "2", "--threads", "8", "--graceful-timeout", "3", "--no-control-socket"]
