-- One database per server: Prefect and MLflow each manage their own schema migrations.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
