"""The Airflow UI for the 跨省通办 sync: a FastAPI app that serves the run reports, and a task link.

Loaded by ``plugins/tongban_plugin.py``. Airflow runs every ``.py`` file under ``plugins/`` as a plugin
module, so this package is listed in ``plugins/.airflowignore`` and imported as a package instead.
Nothing here imports FastAPI or Airflow's API server at import time of the package itself.
"""
