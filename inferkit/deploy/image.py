"""What an inferkit container image promises its orchestrator: one table, read by the
Dockerfile generator and checked against every manifest in ``deploy/`` by the tests, so the
image and the manifests cannot drift apart.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COMMAND", "METRICS_PATH", "MODEL_DIR", "PORTS", "READY_PATH", "USER"]

#: Where the image expects its model repository (KServe's storage initializer mounts here).
MODEL_DIR: Final = "/mnt/models"
#: The container's command: serve the repository at MODEL_DIR.
COMMAND: Final = ("inferkit", "start", MODEL_DIR)
#: Container ports by role; the same defaults as ``Settings`` (and MLServer).
PORTS: Final = {"http": 8080, "grpc": 8081, "metrics": 8082}
#: The readiness path of the V2 protocol, used by HEALTHCHECK and the manifests' probes.
READY_PATH: Final = "/v2/health/ready"
#: Where Prometheus scrapes, on the metrics port.
METRICS_PATH: Final = "/metrics"
#: The non-root user the image runs as (uid:gid).
USER: Final = "1000:1000"
