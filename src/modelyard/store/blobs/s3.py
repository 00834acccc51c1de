"""S3 and S3-compatible servers. Clients move bytes with presigned URLs, never with our keys."""

from __future__ import annotations

from typing import Any

from fsspec.asyn import sync

from modelyard.store.blobs.base import BlobStore, Transfer

PRESIGN_SECONDS = 3600


class S3BlobStore(BlobStore):
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        try:
            import s3fs  # noqa: F401 - fsspec needs it for s3://
        except ModuleNotFoundError as exc:
            from modelyard.errors import ConfigError

            raise ConfigError("s3:// blob stores need s3fs: pip install 'modelyard[s3]'") from exc
        super().__init__(url, options)
        self.bucket = self.root.split("/", 1)[0]

    def _presign(self, method: str, key: str) -> str:
        self.fs.connect()
        bucket, _, name = key.partition("/")
        url: str = sync(
            self.fs.loop,
            self.fs.s3.generate_presigned_url,
            ClientMethod=method,
            Params={"Bucket": bucket, "Key": name},
            ExpiresIn=PRESIGN_SECONDS,
        )
        return url

    def upload_target(self, draft_id: str, path: str) -> Transfer:
        return Transfer(self._presign("put_object", self.staging_key(draft_id, path)), "PUT")

    def download_target(self, digest: str) -> Transfer:
        return Transfer(self._presign("get_object", self.cas_key(digest)), "GET")

    def _move_into_place(self, src: str, dst: str) -> None:
        # A server-side copy then delete: the content address appears whole or not at all.
        self._call("storing", self.fs.copy, src, dst)
        self._call("cleaning", self.fs.rm, src)
