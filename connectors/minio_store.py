"""MinIO / S3 at the boundary: buckets and objects for the model registry and data archive.

Errors from the ``minio`` client and from the network become
:class:`~schemas.errors.ServiceError` naming the endpoint and the setting.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import NoReturn

import urllib3
from minio import Minio, MinioAdmin
from minio.credentials import StaticProvider
from minio.error import MinioAdminException, MinioException, S3Error

from schemas import ServiceError
from schemas.settings import MinioSettings

SETTING_HINT = "set WEIR_MINIO__ENDPOINT / WEIR_MINIO__ACCESS_KEY / WEIR_MINIO__SECRET_KEY"


class ObjectNotFound(ServiceError):
    """The bucket or object does not exist (not worth retrying)."""

    retriable = False


class ObjectStore:
    """A thin, typed wrapper around one MinIO endpoint."""

    def __init__(self, settings: MinioSettings, *, timeout_s: float = 10.0) -> None:
        self._settings = settings
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(502, 503, 504)),
        )
        self._client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key.get_secret_value(),
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )

    def _raise(self, what: str, exc: Exception) -> NoReturn:
        if isinstance(exc, S3Error) and exc.code in ("NoSuchKey", "NoSuchBucket"):
            raise ObjectNotFound(
                f"{what}: {exc.code}", service="minio", address=self._settings.endpoint
            ) from exc
        raise ServiceError(
            f"MinIO at {self._settings.endpoint} failed while {what}: {exc}; {SETTING_HINT}",
            service="minio",
            address=self._settings.endpoint,
        ) from exc

    def ensure_buckets(self, names: tuple[str, ...] | None = None) -> dict[str, str]:
        """Create missing buckets; returns bucket → "created" | "exists"."""
        out: dict[str, str] = {}
        for name in names or self._settings.buckets:
            try:
                if self._client.bucket_exists(name):
                    out[name] = "exists"
                else:
                    self._client.make_bucket(name, location=self._settings.region)
                    out[name] = "created"
            except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
                self._raise(f"creating bucket {name}", exc)
        return out

    def put_bytes(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        """Store ``data``; returns the object's ``s3://bucket/key`` URI."""
        try:
            self._client.put_object(
                bucket, key, io.BytesIO(data), length=len(data), content_type=content_type
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._raise(f"writing s3://{bucket}/{key}", exc)
        return f"s3://{bucket}/{key}"

    def get_bytes(self, bucket: str, key: str) -> bytes:
        try:
            resp = self._client.get_object(bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._raise(f"reading s3://{bucket}/{key}", exc)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def list_keys(self, bucket: str, prefix: str = "") -> Iterator[str]:
        try:
            for obj in self._client.list_objects(bucket, prefix=prefix, recursive=True):
                if obj.object_name is not None:
                    yield obj.object_name
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._raise(f"listing s3://{bucket}/{prefix}", exc)

    def delete(self, bucket: str, key: str) -> None:
        try:
            self._client.remove_object(bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._raise(f"deleting s3://{bucket}/{key}", exc)


READ_POLICY = "weir-models-read"


def ensure_reader(settings: MinioSettings) -> str:
    """Create (or update) the read-only user of ``settings`` and its policy — read the models
    bucket, nothing else — through MinIO's admin API, as ``settings``' own (root) user.
    Returns "ready", or "off" when no reader is configured."""
    if settings.reader_access_key is None or settings.reader_secret_key is None:
        return "off"
    admin = MinioAdmin(
        endpoint=settings.endpoint,
        credentials=StaticProvider(settings.access_key, settings.secret_key.get_secret_value()),
        region=settings.region,
        secure=settings.secure,
    )
    bucket = f"arn:aws:s3:::{settings.models_bucket}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
                "Resource": [bucket],
            },
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{bucket}/*"]},
        ],
    }
    try:
        admin.policy_add(READ_POLICY, policy=policy)
        admin.user_add(settings.reader_access_key, settings.reader_secret_key.get_secret_value())
        try:
            admin.attach_policy([READ_POLICY], user=settings.reader_access_key)
        except MinioAdminException as exc:
            if "AlreadyApplied" not in str(exc):
                raise
    except (MinioAdminException, MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise ServiceError(
            f"MinIO at {settings.endpoint} did not create the read-only user "
            f"{settings.reader_access_key!r} with {settings.access_key!r}'s keys: {exc}; give "
            "WEIR_MINIO__ACCESS_KEY admin rights, or set WEIR_MINIO__READER_ACCESS_KEY and "
            "READER_SECRET_KEY empty (model servers then use WEIR_MINIO__ACCESS_KEY)",
            service="minio",
            address=settings.endpoint,
        ) from exc
    return "ready"
