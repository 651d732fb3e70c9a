"""Files in and out: a task that takes an uploaded text file and returns a new file."""

from fasttask import FastTaskAPI, JobProgress, MediaFile

app = FastTaskAPI(title="files")


@app.task_endpoint("/shout", queue_size=20, timeout=60)
def shout(job_progress: JobProgress, file: MediaFile, suffix: str = "!") -> MediaFile:
    """Upper-case a text file; the result is a file the client downloads."""
    job_progress.set_status(0.5, f"read {file.size} bytes")
    text = file.to_bytes().decode("utf-8", errors="replace")
    loud = "\n".join(line.upper() + suffix if line else line for line in text.splitlines())
    name = f"loud-{file.file_name or 'text.txt'}"
    return MediaFile.from_bytes(loud.encode(), file_name=name, content_type="text/plain")


if __name__ == "__main__":
    app.start()
