"""Model registry: register a run's generator; the best Fréchet distance so far is the `champion`."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

CHAMPION = "champion"
FD_TAG = "frechet_distance"


def register_and_crown(model_uri: str, name: str, frechet_distance: float) -> dict:
    """Register the generator at `model_uri` as `name`; move the champion alias if its FD is the best.

    Returns {"version": str, "champion": bool}.
    """
    client = MlflowClient()
    version = mlflow.register_model(model_uri, name).version
    client.set_model_version_tag(name, version, FD_TAG, str(frechet_distance))
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
        best = float(current.tags.get(FD_TAG, "inf"))
    except mlflow.exceptions.MlflowException:
        best = float("inf")
    crowned = frechet_distance < best
    if crowned:
        client.set_registered_model_alias(name, CHAMPION, version)
    return {"version": version, "champion": crowned}
