#!/bin/sh
# One-shot (the `minio-init` service of docker/compose.yaml): the buckets of the stack, versioned
# so that an overwritten or deleted object can be brought back (README, Deployment: backups).
#   loopline  LOOPLINE_OBJECT_STORE_URL: device frames, uploads, datasets
#   mlflow    the MLflow server's --artifacts-destination: weights, ONNX exports, run artifacts
set -eu
mc alias set stack "$S3_ENDPOINT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >/dev/null
for bucket in loopline mlflow; do
    mc mb --ignore-existing "stack/$bucket"
    mc version enable "stack/$bucket"
done
