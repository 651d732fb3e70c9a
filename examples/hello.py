"""The smallest fasttask service: one task endpoint."""

from fasttask import FastTaskAPI

app = FastTaskAPI(title="hello")


@app.task_endpoint("/hello")
def hello(name: str = "world") -> str:
    return f"hello, {name}"


if __name__ == "__main__":
    app.start()
