"""A task with a file parameter: its size and SHA-256. Files above FTAPI_S3_INLINE_KB go through the bucket
when FTAPI_S3_BUCKET is set (the compose stack), inside the job otherwise."""

import hashlib

from fasttask import FastTaskAPI, MediaFile

app = FastTaskAPI(title="checksum")


@app.task_endpoint("/checksum")
def checksum(file: MediaFile) -> dict[str, object]:
    digest = hashlib.sha256()
    for chunk in file.iter_chunks():
        digest.update(chunk)
    return {"name": file.file_name, "bytes": file.size, "sha256": digest.hexdigest()}


if __name__ == "__main__":
    app.start()
