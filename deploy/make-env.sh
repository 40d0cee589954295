#!/usr/bin/env bash
# Print a deploy/.env for deploy/compose.yaml with fresh random secrets:
#
#   deploy/make-env.sh > deploy/.env && chmod 600 deploy/.env
#
# Keep the file: the replicas must share these values for as long as the data lives
# (a new IMAGEGATE_KEY_SECRET invalidates every stored API key, a new URL signing key every
# link handed out, a new POSTGRES_PASSWORD no longer opens the existing database volume).
set -euo pipefail

# n random bytes as URL-safe base64 without padding: safe inside a database URL and JSON.
random() { head -c "$1" /dev/urandom | base64 | tr -d '\n=' | tr '+/' '-_'; }

cat <<ENV
# Made by deploy/make-env.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Secret: do not commit.
POSTGRES_PASSWORD=$(random 24)
S3_BUCKET=imagegate
S3_ACCESS_KEY_ID=imagegate-$(random 9)
S3_SECRET_ACCESS_KEY=$(random 30)
IMAGEGATE_URL_SIGNING_KEY=$(random 48)
IMAGEGATE_KEY_SECRET=$(random 48)
IMAGEGATE_WEBHOOK_SECRET=whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')
IMAGEGATE_ADMIN_KEY=sk-admin-$(random 30)
# Accepted bearer keys (a JSON list). Keys made with \`imagegate keys create\` live in the
# database instead; the server refuses to start on 0.0.0.0 with neither.
IMAGEGATE_API_KEYS=["sk-$(random 30)"]
IMAGEGATE_PUBLIC_BASE_URL=http://localhost:8000
IMAGEGATE_PORT=8000
ENV
