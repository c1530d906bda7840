"""Model registry: each logged generator registered once; the `champion` is the best Fréchet distance
among versions measured the same way (the same classifier, sample count and seed)."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

CHAMPION = "champion"
FD_TAG = "frechet_distance"
MEASURE_TAG = "measured_by"
URI_TAG = "model_uri"


def registered_name(base: str, conditional: bool) -> str:
    """Like with like: conditional generators take another request format, so they are registered apart."""
    return f"{base}-conditional" if conditional else base


def champion_uri(base: str, conditional: bool) -> str:
    return f"models:/{registered_name(base, conditional)}@{CHAMPION}"


def measure_key(measured_by: dict) -> str:
    """One string for how a figure was measured, e.g. "classifier 1a2b..., 10000 samples, seed 1234"."""
    return (f"classifier {measured_by.get('classifier', '?')}, {measured_by.get('n_samples', '?')} samples, "
            f"seed {measured_by.get('seed', '?')}")


def register_and_crown(model_uri: str, name: str, frechet_distance: float, measure: str = "") -> dict:
    """Register the generator at `model_uri` as `name` (once: a model URI registered before keeps its
    version, so a re-run or a replay adds none); move the champion alias to it if its FD is the best of
    those measured alike (`measure`).

    Returns {"version": str, "champion": bool, "new": bool, "why": str}.
    """
    client = MlflowClient()
    known = [v for v in client.search_model_versions(f"name='{name}'") if v.tags.get(URI_TAG) == model_uri]
    if known:
        version, new = known[0].version, False
    else:
        version, new = mlflow.register_model(model_uri, name, tags={URI_TAG: model_uri}).version, True
    client.set_model_version_tag(name, version, FD_TAG, str(frechet_distance))
    client.set_model_version_tag(name, version, MEASURE_TAG, measure)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        current = None
    if current is None:
        crowned, why = True, "the first version scored"
    elif current.version == version:
        crowned, why = True, "it was already the champion"
    elif not current.tags.get(MEASURE_TAG):
        crowned, why = True, (f"the champion (version {current.version}) has no record of how it was measured, "
                              "so the version measured now takes its place")
    elif current.tags.get(MEASURE_TAG) != measure:
        crowned = False
        why = (f"the champion (version {current.version}) was measured another way "
               f"({current.tags.get(MEASURE_TAG) or 'unrecorded'}), so the two FDs are not comparable; "
               f"re-run its evaluate with this classifier and settings to compare them")
    else:
        best = float(current.tags.get(FD_TAG, "inf"))
        crowned = frechet_distance < best
        why = (f"FD {frechet_distance:.2f} {'beats' if crowned else 'does not beat'} the champion's {best:.2f} "
               f"(version {current.version}), measured alike")
    if crowned:
        client.set_registered_model_alias(name, CHAMPION, version)
    return {"version": version, "champion": crowned, "new": new, "why": why}
