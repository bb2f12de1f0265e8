# The hosted image's Jupyter server settings (in /etc/jupyter), whether it is started as `jupyter lab`
# (the image's command), `jupyter notebook` (repo2docker, Binder) or `jupyterhub-singleuser` (JupyterHub).
from autograder.practice.supervise import start_cluster_in_background

c = get_config()  # noqa: F821 (Jupyter's config loader defines it)
# Every way in opens on the notebooks.
c.ServerApp.default_url = "/lab/tree/notebooks"
c.LabApp.default_url = "/lab/tree/notebooks"
c.JupyterNotebookApp.default_url = "/tree/notebooks"
# The practice cluster starts with the server: ready by the time a notebook's connect() asks for it
# (LAB_PRACTICE_AT_START=0 leaves it to that first connect()).
start_cluster_in_background()
