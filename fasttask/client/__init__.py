"""fasttask's client: call a fasttask service from Python, or with `fasttask call`.

```python
from fasttask.client import Client

with Client("http://127.0.0.1:8000", api_key="…") as client:
    print(client.call("/make_fries", fries_name="cheesy", progress=True))
    job = client.submit("/img2img", image=Path("cat.png"))
    job.result(timeout=600).save("out/")

runpod = Client.for_runpod("abc123xyz", api_key="rpa_…")   # the same app deployed with FTAPI_BACKEND=runpod
print(runpod.call("/make_fries", fries_name="cheesy"))
```

Layers: `Client` / `AsyncClient` and their job handles (`_sync`, `_async`) talk to a transport (`_transport`
is the seam, `_http` the fasttask HTTP API, `_runpod` runpod serverless's queue API, read and written by
`_runpod_protocol`); what both twins share without I/O (requests, answers, retries, deadlines) is in `_core`,
files both ways in `_files`, progress bars in `_progress`.
"""

from ._async import AsyncClient, AsyncJob
from ._errors import APIError, ClientError, ConnectionFailed, InvalidArgument, JobFailed, ResultTimeout
from ._files import AsyncRemoteFile, RemoteFile
from ._models import JobState, StreamEvent
from ._sync import Client, Job

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncJob",
    "AsyncRemoteFile",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "InvalidArgument",
    "Job",
    "JobFailed",
    "JobState",
    "RemoteFile",
    "ResultTimeout",
    "StreamEvent",
]
