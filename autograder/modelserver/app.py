"""The lesson's model server: a dummy model that sums the features, with the image's version."""

import math
import os
import signal
import sys

import numpy as np
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

app = Flask(__name__)

# Baked into the image by the Dockerfile (ARG/ENV MODEL_VERSION): v1 and v2 differ only here.
MODEL_VERSION = os.environ.get("MODEL_VERSION", "v1.0")


def bad_request(message):
    """A 400 with a JSON body that tells the caller what to send instead."""
    return jsonify({"error": message, "expected": {"features": [1, 2, 3, 4, 5]}}), 400


def as_number(value):
    """The feature as a finite float, or None when it is text, a bool, NaN or too large."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


@app.route("/predict", methods=["POST"])
def predict():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return bad_request("send a JSON object with Content-Type: application/json")
    features = data.get("features")
    if not isinstance(features, list) or not features:
        return bad_request("'features' must be a non-empty list of numbers")
    numbers = [as_number(x) for x in features]
    if None in numbers:
        return bad_request("every feature must be a finite number")
    # Simulate ML prediction: the "model" is a sum.
    with np.errstate(over="ignore"):
        prediction = float(np.sum(np.array(numbers)))
    if not math.isfinite(prediction):
        return bad_request("the features sum past the largest float; send smaller numbers")
    return jsonify({"prediction": prediction, "model_version": MODEL_VERSION})


@app.route("/health", methods=["GET"])
def health():
    return jsonify({"status": "healthy"})


@app.errorhandler(HTTPException)
def http_error(error):
    """Wrong paths and methods answer JSON too, so every client can read the reason."""
    return jsonify({"error": f"{error.code} {error.name}: {error.description}"}), error.code


def stop_serving(signum, frame):
    """SIGTERM (docker stop, a pod's deletion) ends the server at once: PID 1 would ignore it."""
    print("SIGTERM received: stopping the server", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_serving)
    app.run(host="0.0.0.0", port=int(os.environ.get("PORT", "8080")))
