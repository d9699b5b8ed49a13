#!/bin/sh
# The namespace specmill's workflows run in, made once the server answers (docker-compose.yml).
set -eu
ns="${DEFAULT_NAMESPACE:-default}"
temporal operator namespace describe --namespace "$ns" --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1 \
  || temporal operator namespace create --namespace "$ns" --retention 30d --address "$TEMPORAL_ADDRESS"
echo "namespace $ns ready"
