#!/usr/bin/env bash
# Team mode on one machine, no Docker: MLflow tracking server and Prefect server, both on
# PostgreSQL, bound to 127.0.0.1. `make team-up` / `make team-down` call this script.
#   docker/local-team.sh up|down
# Settings (environment): PG_URL (postgresql://user[:password]@host:port, default the local
# trust-auth server), MLFLOW_DB, PREFECT_DB, MLFLOW_PORT, PREFECT_PORT, TEAM_DIR (pids, logs,
# artifacts), VENV_BIN.
set -euo pipefail

PG_URL=${PG_URL:-postgresql://postgres@127.0.0.1:5432}
MLFLOW_DB=${MLFLOW_DB:-reviewgru_mlflow}
PREFECT_DB=${PREFECT_DB:-reviewgru_prefect}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PREFECT_PORT=${PREFECT_PORT:-4200}
TEAM_DIR=${TEAM_DIR:-$PWD/.team}
VENV_BIN=${VENV_BIN:-$PWD/.venv/bin}

wait_for() {  # url, name, pid file
  for _ in $(seq 1 120); do
    if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$(cat "$3")" 2>/dev/null; then echo "$2 exited; see $TEAM_DIR/$2.log" >&2; exit 1; fi
    sleep 1
  done
  echo "$2 did not answer $1 within 120 s; see $TEAM_DIR/$2.log" >&2
  exit 1
}

create_db() {
  if ! psql "$PG_URL/postgres" -tAc "select 1 from pg_database where datname = '$1'" | grep -q 1; then
    psql "$PG_URL/postgres" -qc "create database \"$1\""
  fi
}

up() {
  mkdir -p "$TEAM_DIR/artifacts" "$TEAM_DIR/prefect-home"
  create_db "$MLFLOW_DB"
  create_db "$PREFECT_DB"
  # setsid: each server leads its own process group, so `down` stops it with its workers.
  setsid "$VENV_BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "${PG_URL/postgresql:/postgresql+psycopg2:}/$MLFLOW_DB" --artifacts-destination "$TEAM_DIR/artifacts" \
    >"$TEAM_DIR/mlflow.log" 2>&1 &
  echo $! >"$TEAM_DIR/mlflow.pid"
  PREFECT_HOME="$TEAM_DIR/prefect-home" \
  PREFECT_API_DATABASE_CONNECTION_URL="${PG_URL/postgresql:/postgresql+asyncpg:}/$PREFECT_DB" \
  PREFECT_SERVER_ANALYTICS_ENABLED=false \
    setsid "$VENV_BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" \
    >"$TEAM_DIR/prefect.log" 2>&1 &
  echo $! >"$TEAM_DIR/prefect.pid"
  wait_for "http://127.0.0.1:$MLFLOW_PORT/health" mlflow "$TEAM_DIR/mlflow.pid"
  wait_for "http://127.0.0.1:$PREFECT_PORT/api/health" prefect "$TEAM_DIR/prefect.pid"
  cat <<MSG
Team servers are up (logs in $TEAM_DIR):
  MLflow   http://127.0.0.1:$MLFLOW_PORT   (PostgreSQL database $MLFLOW_DB)
  Prefect  http://127.0.0.1:$PREFECT_PORT  (PostgreSQL database $PREFECT_DB)
Point reviewgru at them:
  export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
  export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
MSG
}

down() {
  for name in prefect mlflow; do
    pid_file="$TEAM_DIR/$name.pid"
    if [[ -f $pid_file ]]; then
      kill -TERM -- "-$(cat "$pid_file")" 2>/dev/null || true
      rm -f "$pid_file"
      echo "stopped $name"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
