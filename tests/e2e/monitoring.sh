#!/usr/bin/env bash
# Checks the Prometheus alert rules in deploy/kubernetes/monitoring with
# promtool (Debian's prometheus package): their syntax (`check rules`) and
# their logic (`test rules`, the unit tests beside them). That the rules and
# the Grafana dashboard query only metrics the server exports is checked by
# crates/server/tests/monitoring.rs.
set -euo pipefail
cd "$(dirname "$0")/../.."

source scripts/apt.sh
command -v promtool >/dev/null 2>&1 || apt_install "its promtool checks the alert rules" --no-install-recommends prometheus

cd deploy/kubernetes/monitoring/prometheus
promtool check rules arbiter-alerts.yaml
promtool test rules arbiter-alerts.test.yaml
