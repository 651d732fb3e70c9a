"""fasttask app for the file benchmark: one task that returns the file it was given."""

from fasttask import FastTaskAPI, MediaFile

app = FastTaskAPI(title="bench-files")


@app.task_endpoint("/echo_file", queue_size=10)
def echo_file(file: MediaFile) -> MediaFile:
    return file
