"""Clients of the outside world: Kafka, MinIO, KServe, the model host, Kubeflow Pipelines."""
