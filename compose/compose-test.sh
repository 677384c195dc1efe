#!/usr/bin/env bash
# `make compose-test`: run compose/docker-compose.yml for real under a local Docker engine and check
# that orders flow from the orders service through the relay and the store to both consumer groups.
#
# Images are built locally from Debian packages (compose/base-image.sh, compose/postgres-local), so
# no registry pull is needed; set OUTBOX_BASE_IMAGE=python:3.11-slim and POSTGRES_IMAGE=postgres:16-bookworm
# to use the registry images instead. The kafka profile needs apache/kafka from a registry:
# COMPOSE_PROFILES=kafka compose/compose-test.sh. Exits non-zero, with the logs, if anything fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if docker compose version >/dev/null 2>&1; then compose=(docker compose); \
elif command -v docker-compose >/dev/null; then compose=(docker-compose); \
else echo "compose-test: neither 'docker compose' nor 'docker-compose' is installed (apt-get install docker-compose)" >&2; exit 1; fi
docker info >/dev/null 2>&1 || { echo "compose-test: no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); start dockerd first" >&2; exit 1; }

export OUTBOX_BASE_IMAGE="${OUTBOX_BASE_IMAGE:-outbox-streams-base:bookworm}"
export POSTGRES_IMAGE="${POSTGRES_IMAGE:-outbox-streams-postgres:15}"
if [[ "$OUTBOX_BASE_IMAGE" == outbox-streams-base:* ]]; then ./base-image.sh "$OUTBOX_BASE_IMAGE"; fi
if [[ "$POSTGRES_IMAGE" == outbox-streams-postgres:* ]]; then
    docker build -q --build-arg BASE_IMAGE="$OUTBOX_BASE_IMAGE" -t "$POSTGRES_IMAGE" postgres-local >/dev/null
fi

project="outbox-compose-test-$$"
dc() { "${compose[@]}" -p "$project" "$@"; }
cleanup() {
    status=$?
    if ((status != 0)); then dc ps || true; dc logs --tail 40 || true; fi
    dc down -v --remove-orphans >/dev/null 2>&1 || true
    exit "$status"
}
trap cleanup EXIT

dc build
dc up -d
count() {  # database, SQL: one number, or 0 while the table does not exist yet
    dc exec -T postgres psql -U outbox -d "$1" -Atc "$2" 2>/dev/null || echo 0
}
deadline=$((SECONDS + ${COMPOSE_TEST_TIMEOUT:-180}))
while :; do
    orders=$(count orders "SELECT count(*) FROM shop.orders")
    inventory=$(count inventory "SELECT count(*) FROM inventory.reservations")
    email=$(count email "SELECT count(*) FROM email.messages")
    if ((orders >= 200 && inventory >= 200 && email >= 200)); then break; fi
    if ((SECONDS > deadline)); then
        echo "compose-test: timed out: orders=$orders inventory=$inventory email=$email" >&2
        exit 1
    fi
    sleep 3
done
for service in postgres store kafka relay inventory email; do
    id=$(dc ps -q "$service" 2>/dev/null || true)
    [[ -n "$id" || "$service" == store || "$service" == kafka ]] || { echo "compose-test: $service is not running" >&2; exit 1; }
    [[ -n "$id" ]] || continue  # the broker of the profile not in use
    health=$(docker inspect -f '{{.State.Health.Status}}' "$id")
    [[ "$health" == healthy ]] || { echo "compose-test: $service is $health" >&2; exit 1; }
done
dc exec -T relay outbox status
echo "compose-test: ok: $orders orders, $inventory inventory reservations, $email e-mails; every service healthy"
