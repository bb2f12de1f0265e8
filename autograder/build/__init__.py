"""Offline build tooling no notebook imports: the python base image and the kind node image."""
