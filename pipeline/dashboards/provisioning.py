"""Grafana provisioning: datasources and the dashboards provider.

Hosts are the docker-compose service names (prometheus:9090, clickhouse:8123); another
deployment edits the generated files or regenerates them. The ClickHouse password is read
from Grafana's environment ($CLICKHOUSE_PASSWORD: Grafana expands variables in provisioning
files), never written here. The ClickHouse datasource needs a ClickHouse server
(PULSE_CLICKHOUSE_URL=http(s)://...); with the embedded engine only Prometheus panels have data.
"""

from __future__ import annotations

from typing import Any

from pipeline.dashboards.panels import CLICKHOUSE_PLUGIN, CLICKHOUSE_UID, PROMETHEUS_UID

DASHBOARDS_PATH = "/var/lib/grafana/dashboards"


def datasources() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": PROMETHEUS_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": "http://prometheus:9090",
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": "5s", "httpMethod": "POST"},
            },
            {
                "name": "ClickHouse",
                "uid": CLICKHOUSE_UID,
                "type": CLICKHOUSE_PLUGIN,
                "editable": False,
                "jsonData": {
                    "host": "clickhouse",
                    "port": 8123,
                    "protocol": "http",
                    "secure": False,
                    "username": "default",
                    "defaultDatabase": "default",
                },
                "secureJsonData": {"password": "$CLICKHOUSE_PASSWORD"},
            },
        ],
    }


def dashboard_provider() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "community-pulse",
                "orgId": 1,
                "folder": "Community Pulse",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": DASHBOARDS_PATH, "foldersFromFilesStructure": False},
            }
        ],
    }
