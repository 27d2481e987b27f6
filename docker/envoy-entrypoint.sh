#!/bin/sh
# Renders the Envoy template from the environment, then becomes Envoy.
set -eu
envsubst < /etc/palisade/envoy.yaml.tmpl > /tmp/envoy.yaml
exec envoy -c /tmp/envoy.yaml --concurrency "${ENVOY_CONCURRENCY:-2}" --log-level "${ENVOY_LOG_LEVEL:-info}" "$@"
