"""A student's own model server, Dockerfile and manifests, written by a graded cell as students do.

Graded kernels may not read the course's reference app, so the test assignments carry their own.
"""

from __future__ import annotations

APP = """from flask import Flask, jsonify, request

app = Flask(__name__)
MODEL_VERSION = {version!r}
{extra}

@app.route("/predict", methods=["POST"])
def predict():
    return jsonify({{"prediction": float(sum(request.get_json()["features"])),
                    "model_version": MODEL_VERSION}})


@app.route("/health")
def health():
    return jsonify({{"status": "healthy"}})


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=8080)
"""

DOCKERFILE = """FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY app.py .
EXPOSE 8080
CMD ["python", "app.py"]
"""

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: ml-api, labels: {app: ml-api}}
spec:
  replicas: 2
  selector: {matchLabels: {app: ml-api}}
  template:
    metadata: {labels: {app: ml-api}}
    spec:
      containers:
        - name: ml-api
          image: ml-api:v1
          imagePullPolicy: Never
          ports: [{containerPort: 8080}]
          readinessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: ml-api-service, labels: {app: ml-api}}
spec:
  selector: {app: ml-api}
  ports: [{port: 80, targetPort: 8080}]
"""


def app(version: str, extra: str = "") -> str:
    """app.py answering `model_version` = `version`; `extra` runs at start (a crash, say)."""
    return APP.format(version=version, extra=extra)


def write_app(version: str, extra: str = "", folder: str = "ml-api") -> str:
    """Cell code that writes only app.py into the work folder, as the lesson's v2 edit does."""
    return "\n".join(
        [
            "from pathlib import Path",
            f"WORK = Path({folder!r})",
            "WORK.mkdir(exist_ok=True)",
            f"(WORK / 'app.py').write_text({app(version, extra)!r})",
        ]
    )


def write_folder(version: str, extra: str = "", folder: str = "ml-api") -> str:
    """Cell code that writes the student's build folder (app.py, requirements.txt, Dockerfile)."""
    return "\n".join(
        [
            write_app(version, extra, folder),
            "(WORK / 'requirements.txt').write_text('flask\\n')",
            f"(WORK / 'Dockerfile').write_text({DOCKERFILE!r})",
        ]
    )


def load(tag: str, version: str | None = None, folder: str = "ml-api") -> str:
    """Cell code that loads the folder into the cluster as `tag` (MODEL_VERSION=`version`)."""
    return f"images.load_into_cluster(lab, {tag!r}, context={folder!r}, version={version!r})"
