"""tongban: the domain core of the nightly 跨省通办 service-item sync. Imports no Airflow."""
