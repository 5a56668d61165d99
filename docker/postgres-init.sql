-- Run once by the postgres image on an empty data volume: the item store's own database next to
-- Airflow's metadata database (same server, same role). Its schema is created by Alembic on first use.
CREATE DATABASE tongban OWNER airflow;
