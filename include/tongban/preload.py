"""What a task process of the sync imports, imported once by the worker that forks task processes.

Airflow 3 runs every task in a process of its own, forked (``os.fork``) from its worker: with the
LocalExecutor a worker process of the scheduler, with Celery a process of the worker's pool. A module the
worker has imported before the fork is there in the task process at no cost, copy-on-write, as with
gunicorn's ``--preload``; a module it has not is imported by every task again: about 0.9 s of CPU for the
item store and the stages, and 2 s more for GX and pandas in the validating tasks (measured here).
``scripts/localenv.py`` names this module last in its one list of what a worker imports before it forks
(``TASK_PRELOAD``), used twice: in ``[scheduler] mp_forkserver_preload`` with ``[scheduler] mp_start_method =
forkserver``, so the LocalExecutor's workers start from a process that has imported it, and as Celery's
``imports`` in ``[celery] extra_celery_config``, so a Celery worker's main process imports it before it forks
its pool (docker-compose.yaml sets the same).

Importing it only imports, then compiles what every task process would compile again in memory (the report
templates, SQLAlchemy's mappers of the item store): no connection, no file, no thread is left open, so a fork
after it is safe. Then it
freezes the garbage collector's view of everything imported so far (``gc.freeze()``, as Airflow does before it
forks workers itself): a task process would otherwise walk those objects in every full collection, 0.3 s of
CPU each, and copy the pages it touches.
"""

from __future__ import annotations

import gc

import openpyxl  # noqa: F401  (the report's workbook; report.write_xlsx imports it when it runs)
import pandas  # noqa: F401
from sqlalchemy.orm import configure_mappers

import tongban.delivery
import tongban.guard
import tongban.outbound.library
import tongban.outbound.report
import tongban.outbound.stages
import tongban.pipeline
import tongban.province
import tongban.publish
import tongban.report
import tongban.store.repo
import tongban.validation.five_level  # GX, after tongban.validation has quietened its import
import tongban.validation.runner

tongban.report.compile_templates()
configure_mappers()
gc.freeze()
