"""The Redis queue (`FTAPI_QUEUE=redis`): jobs are RQ jobs, run by `fasttask worker` processes.

Everything that knows Redis or RQ lives in this package, and no other code imports `redis` or `rq`:

- `keys`: every key and channel name, and the `ft_*` fields fasttask adds to RQ's job hash;
- `scripts`: the Lua scripts, one per atomic step of a job's life;
- `codec`: RQ's formats (the job record, the claim reply, result stream entries, errors);
- `broker`, `views`: the API side (`RedisBroker`) and its read-only views;
- `cleanup`: RQ's cleanup of abandoned jobs and the storage sweep, run by every live process;
- `worker`, `jobio`, `guard`, `presence`, `process`: the worker process.

This `__init__` imports nothing, so `fasttask.redis.keys` and `fasttask.redis.codec` stay cheap to load.
Inside the package, `import redis` still means the redis-py library: imports are absolute.
"""
