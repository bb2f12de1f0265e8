"""The classroom: a JupyterHub on one machine where students fetch, submit and get feedback through
nbgrader's exchange, each in a confined server with a practice cluster of their own."""
