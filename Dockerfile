# The image of the scale-out deployment (docker-compose.yaml): Airflow 3.3 plus the tongban package,
# installed from the same pinned requirements as the embedded deployment.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:0 requirements.txt pyproject.toml README.md /opt/tongban/
COPY --chown=airflow:0 include /opt/tongban/include
RUN pip install --no-cache-dir -r /opt/tongban/requirements.txt \
 && pip install --no-cache-dir --no-deps /opt/tongban
