"""Everything that talks to the outside world: Kafka, MinIO, KServe, Kubeflow Pipelines, Knative."""
