"""Many boxes on one SQS queue in an Auto Scaling group: taking jobs from the queue, leaving the group when idle,
and waking stopped boxes on demand."""
