"""The reference model server (app.py, requirements.txt, Dockerfile) notebooks and tests build."""

from pathlib import Path

SOURCE = Path(__file__).resolve().parent
