"""The model registry side: lineage, the MLflow store, aliases and promotion, model cards,
audit, serving and generation."""
