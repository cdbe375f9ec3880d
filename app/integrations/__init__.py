"""Model-registry integrations: MLflow events in, tags out, and reconciling what was missed.

``mlflow_signature`` verifies a delivery, ``mlflow_events`` reads one, ``mlflow_checks``
starts a version's check once, ``mlflow_tags`` writes its outcome back and
``mlflow_reconcile`` finds versions whose delivery was lost. They run in API processes, never
in workers, and import mlflow only when MLflow is configured.
"""
