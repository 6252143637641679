"""What a job sent through the fleet's queue is called, the same on the sending and on the running side."""

import hashlib


def job_id_for_message(message_id: str) -> str:
    """The id of the job an SQS message asks for.

    Derived from the message id, so a message received again after its box died runs as the same job and
    writes the same result keys; the sender knows the id, and the results location, as soon as SQS accepts it.
    It has the form of every other job id (40 hex digits).
    """
    return hashlib.sha1(message_id.encode("utf-8"), usedforsecurity=False).hexdigest()
