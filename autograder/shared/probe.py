"""Call the model server the way the lesson's curl commands do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import requests


def predict(url: str, features: Sequence[float]) -> dict:
    """POST /predict with {"features": [...]}; returns the JSON answer."""
    answer = requests.post(f"{url}/predict", json={"features": list(features)}, timeout=10)
    answer.raise_for_status()
    return answer.json()


def health(url: str) -> dict:
    """GET /health; returns the JSON answer."""
    answer = requests.get(f"{url}/health", timeout=10)
    answer.raise_for_status()
    return answer.json()


@dataclass
class ModelServer:
    """Where a model server answers: a local container, a port-forward to a Service."""

    url: str

    def predict(self, features: Sequence[float]) -> dict:
        return predict(self.url, features)

    def health(self) -> dict:
        return health(self.url)
