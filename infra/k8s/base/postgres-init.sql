-- MLflow keeps its users and permissions (basic auth) in a database of their own.
CREATE DATABASE mlflow_auth;
