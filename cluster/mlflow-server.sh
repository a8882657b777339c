#!/usr/bin/env bash
# The MLflow tracking server of a cluster, next to the Ray head, with PostgreSQL as its
# backend store. Sweeps on the cluster log to it: `caviar sweep SPEC --tracking-uri http://HEAD:5000`.
#
#   MLFLOW_DB=postgresql://mlflow:SECRET@localhost:5432/mlflow \
#   MLFLOW_ARTIFACTS=/shared/mlflow-artifacts  cluster/mlflow-server.sh
#
# Artifacts (reports, champion models) are served through the server (`mlflow-artifacts:`),
# so drivers do not need access to the artifact folder. Binding 0.0.0.0 exposes the server to
# the cluster's network: list the names clients use in --allowed-hosts, and keep the port
# behind the cluster's firewall (MLflow's own server has no authentication by default).
set -euo pipefail
: "${MLFLOW_DB:?set MLFLOW_DB, e.g. postgresql://mlflow:SECRET@localhost:5432/mlflow}"
: "${MLFLOW_ARTIFACTS:=$HOME/mlflow-artifacts}"
: "${MLFLOW_PORT:=5000}"
: "${MLFLOW_ALLOWED_HOSTS:=localhost,127.0.0.1,$(hostname),$(hostname -I | awk '{print $1}')}"
# The Host header carries the port when it is not 80: allow each name with and without it.
allowed=""
IFS=, read -ra names <<< "$MLFLOW_ALLOWED_HOSTS"
for name in "${names[@]}"; do allowed+="$name,$name:$MLFLOW_PORT,"; done
mkdir -p "$MLFLOW_ARTIFACTS"
exec mlflow server \
  --backend-store-uri "$MLFLOW_DB" \
  --artifacts-destination "$MLFLOW_ARTIFACTS" \
  --host 0.0.0.0 --port "$MLFLOW_PORT" \
  --allowed-hosts "${allowed%,}"
