# The hosted image's Jupyter server settings (in /etc/jupyter): every way in opens on the notebooks,
# whether it is started as `jupyter lab` (the image's command), `jupyter notebook` (repo2docker,
# Binder) or `jupyterhub-singleuser` (JupyterHub).
c = get_config()  # noqa: F821 (Jupyter's config loader defines it)
c.ServerApp.default_url = "/lab/tree/notebooks"
c.LabApp.default_url = "/lab/tree/notebooks"
c.JupyterNotebookApp.default_url = "/tree/notebooks"
