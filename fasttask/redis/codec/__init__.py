"""RQ's formats, written and read in one place: the job record a submit writes and a claim reads, the claim's
reply, the result stream entry a job's end writes, errors, and the job JSON read back from all of them.

`records` holds the job record and what is read back from it; `claims` a job's run: the claim scripts'
replies and the arguments of the scripts that end a job or put it back. Nothing here talks to Redis (RQ needs
a connection object to build a record, and does no I/O with it).
"""

from .claims import (
    BatchClaim,
    ClaimedRecord,
    Ending,
    decode_batch_claim,
    decode_claim,
    failed,
    finish_arguments,
    finished,
    requeue_arguments,
)
from .records import (
    ABANDONED,
    INLINE_PARAMS_LIMIT_BYTES,
    JOB_DATA_LIMIT_BYTES,
    READ_FIELDS,
    RECORD_FIELDS,
    RESULT_KEPT_LIMIT_BYTES,
    RESULT_TYPE_FAILED,
    RESULT_TYPE_SUCCESSFUL,
    InvalidJobRecord,
    decode_job_data,
    encode_exception_text,
    encode_result,
    job_record_fields,
    needs_result_entry,
    parse_rq_timestamp,
    record_from_redis,
    rq_timestamp,
)

__all__ = [
    "ABANDONED",
    "INLINE_PARAMS_LIMIT_BYTES",
    "JOB_DATA_LIMIT_BYTES",
    "READ_FIELDS",
    "RECORD_FIELDS",
    "RESULT_KEPT_LIMIT_BYTES",
    "RESULT_TYPE_FAILED",
    "RESULT_TYPE_SUCCESSFUL",
    "BatchClaim",
    "ClaimedRecord",
    "Ending",
    "InvalidJobRecord",
    "decode_batch_claim",
    "decode_claim",
    "decode_job_data",
    "encode_exception_text",
    "encode_result",
    "failed",
    "finish_arguments",
    "finished",
    "job_record_fields",
    "needs_result_entry",
    "parse_rq_timestamp",
    "record_from_redis",
    "requeue_arguments",
    "rq_timestamp",
]
